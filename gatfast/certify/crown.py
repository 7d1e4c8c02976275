"""Linear-relaxation bounds: CROWN-IBP (Zhang et al. 2020, "Towards stable and efficient
training of verifiably robust neural networks") and CROWN (Zhang et al. 2018, "Efficient
neural network robustness certification with general activation functions").

Both carry, backward from the specification, a linear function A . z + b of the current
layer's input z that bounds spec @ output from below:
- an affine layer g maps A to A J_g and adds A . g(0) to b: Linear, Conv2d (a transposed
  convolution), Flatten and per-channel affine layers have their rule written out (so the
  pass is cheap and differentiable for certified training); any other affine layer
  (average pooling) goes through autograd's vector-Jacobian product;
- a ReLU with input in [l, u] keeps the side of each coefficient: a positive one takes the
  lower line alpha z (alpha = 1 where u > -l, else 0: the adaptive choice of both papers),
  a negative one the upper line u (z - l) / (u - l); stable units are exact;
- at the input, A . x' is bounded over the ball and the box in closed form (L-inf: each
  coefficient at the end of the box that minimises it; L2: A . x - eps ||A||_2).

They differ in the ReLU inputs' [l, u]: CROWN-IBP takes IBP's intervals (one backward pass
in all); CROWN bounds every ReLU's input by a backward pass of its own, from the identity
over that layer (intersected with IBP's interval), which costs a pass per ReLU with as many
rows as the layer has units: affordable for MLPs and the small strided CNNs of certified
training, refused (ValueError, with the size) past `max_rows` rows per image.

Max pooling has no linear relaxation here: a pass stops after the last MaxPool2d before it
and is bounded there by that layer's interval (sound, and tighter than IBP after the
pooling). Upper bounds are the lower bounds of -spec.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gatfast.certify import ibp
from gatfast.certify.layers import affine_of, chain, is_affine
from gatfast.ops import checks

MAX_ROWS = 20_000        # full CROWN: the most units a ReLU layer may have (rows of its pass, per image)
_CHUNK_FLOATS = 2 ** 26  # full CROWN: coefficients held at once (256 MiB of float32)


def bounds(model: nn.Module, x: torch.Tensor, eps: float, *, norm: str = "linf", lo: float = 0.0, hi: float = 1.0,
           spec: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """CROWN-IBP lower and upper bounds on model(x') (or spec @ model(x')) over the ball and box."""
    return _bounds(model, x, eps, norm, lo, hi, spec, full=False)


def crown_bounds(model: nn.Module, x: torch.Tensor, eps: float, *, norm: str = "linf", lo: float = 0.0,
                 hi: float = 1.0, spec: torch.Tensor | None = None,
                 max_rows: int = MAX_ROWS) -> tuple[torch.Tensor, torch.Tensor]:
    """CROWN lower and upper bounds: every ReLU's input bounded by its own backward pass."""
    return _bounds(model, x, eps, norm, lo, hi, spec, full=True, max_rows=max_rows)


def _bounds(model, x, eps, norm, lo, hi, spec, *, full, max_rows=MAX_ROWS):
    checks.tensor(x, "x")
    norm = checks.norm(norm, allow_none=False)
    eps = checks.nonnegative(eps, "eps")
    lo, hi = checks.box(lo, hi)
    layers = chain(model)
    shapes, out_shape = _shapes(layers, x)
    given = spec is not None
    if given:
        ibp.check_spec(spec, x)
    else:  # every output unit: the identity over the flattened output
        spec = torch.eye(_numel(out_shape), dtype=x.dtype, device=x.device).expand(x.shape[0], -1, -1)
    spec = spec.reshape(spec.shape[:2] + out_shape)
    intervals = ibp.intervals(layers, x, eps, norm, lo, hi)
    if full:
        intervals = _tighten(layers, shapes, intervals, x, eps, norm, lo, hi, max_rows)
    ball = (x, eps, norm, lo, hi)
    n = len(layers)
    lower = _backward(layers, n, spec, shapes, intervals, ball)
    upper = -_backward(layers, n, -spec, shapes, intervals, ball)
    if given:
        return lower, upper
    return lower.view((-1,) + out_shape), upper.view((-1,) + out_shape)


def _numel(shape) -> int:
    return int(torch.Size(shape).numel())


def _shapes(layers, x):
    """Each layer's input shape (without the batch), and the output's, from one forward pass."""
    shapes, h = [], x[:1]
    with torch.no_grad():
        for layer in layers:
            shapes.append(tuple(h.shape[1:]))
            h = layer(h)
    return shapes, tuple(h.shape[1:])


def _tighten(layers, shapes, intervals, x, eps, norm, lo, hi, max_rows) -> dict:
    """Full CROWN: each ReLU's input interval from a backward pass of its own (intersected
    with IBP's), the intervals after it carried on by IBP from the tightened one."""
    intervals = dict(intervals)
    ball = (x, eps, norm, lo, hi)
    seen_relu = False
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.ReLU) and i in intervals:
            if seen_relu:  # before the first ReLU no relaxation was made: IBP's interval is as good
                rows = _numel(shapes[i])
                if rows > max_rows:
                    raise ValueError(f"full CROWN would bound {rows} units of layer {i} ({type(layer).__name__}) "
                                     f"by a pass of their own, past max_rows={max_rows}: use crown-ibp")
                low, up = _identity_bounds(layers, i, shapes, intervals, ball)
                intervals[i] = (torch.max(intervals[i][0], low), torch.min(intervals[i][1], up))
                mid, rad = _carry(layers, i, intervals[i])
                for j in range(i + 1, len(layers) + 1):
                    intervals[j] = (mid - rad, mid + rad)
                    if j < len(layers):
                        mid, rad = ibp._layer(layers[j], mid, rad)
            seen_relu = True
    return intervals


def _carry(layers, i, interval):
    low, up = interval
    return ibp._layer(layers[i], (up + low) / 2, (up - low) / 2)


def _identity_bounds(layers, i, shapes, intervals, ball):
    """Bounds on the input of layer i (the output of layers[:i]) by CROWN, in chunks of
    images and of units so that no more than _CHUNK_FLOATS coefficients live at once."""
    x = ball[0]
    shape, rows = shapes[i], _numel(shapes[i])
    widest = max(_numel(s) for s in shapes[: i + 1])
    per_image = max(1, _CHUNK_FLOATS // (rows * widest))
    unit_chunk = rows if per_image > 1 else max(1, _CHUNK_FLOATS // widest)
    lows, ups = [], []
    for s in range(0, x.shape[0], per_image):
        sub = slice(s, s + per_image)
        sub_ball = (x[sub],) + ball[1:]
        sub_iv = {k: (a[sub], b[sub]) for k, (a, b) in intervals.items()}
        low_parts, up_parts = [], []
        for r in range(0, rows, unit_chunk):
            k = min(unit_chunk, rows - r)
            eye = torch.zeros(k, rows, dtype=x.dtype, device=x.device)
            eye[torch.arange(k), torch.arange(r, r + k)] = 1
            spec = eye.view((1, k) + shape).expand((sub_ball[0].shape[0], k) + shape)
            low_parts.append(_backward(layers, i, spec, shapes, sub_iv, sub_ball))
            up_parts.append(-_backward(layers, i, -spec, shapes, sub_iv, sub_ball))
        lows.append(torch.cat(low_parts, 1))
        ups.append(torch.cat(up_parts, 1))
    return torch.cat(lows).view((-1,) + shape), torch.cat(ups).view((-1,) + shape)


def _backward(layers, end, spec, shapes, intervals, ball) -> torch.Tensor:
    """The lower bound of spec @ (the output of layers[:end]), carried back to the input or
    to the interval after the last max pooling before `end`."""
    x, eps, norm, lo, hi = ball
    cut = max((i + 1 for i in range(end) if isinstance(layers[i], nn.MaxPool2d)), default=0)
    n, k = spec.shape[:2]
    a, b = spec, torch.zeros(n, k, dtype=spec.dtype, device=spec.device)
    for i in reversed(range(cut, end)):
        if isinstance(layers[i], nn.ReLU):
            a, b = _through_relu(a, b, *intervals[i])
        else:
            a, b = _through_affine(layers[i], a, b, shapes[i])
    if cut > 0:  # bounded by the interval of the layer after the last max pooling
        low, up = (t.unsqueeze(1) for t in intervals[cut])
        return (a.clamp(min=0) * low + a.clamp(max=0) * up).flatten(2).sum(-1) + b
    if norm == "linf":
        low, up = ((x - eps).clamp(lo, hi).unsqueeze(1), (x + eps).clamp(lo, hi).unsqueeze(1))
        return (a.clamp(min=0) * low + a.clamp(max=0) * up).flatten(2).sum(-1) + b
    return (a * x.unsqueeze(1)).flatten(2).sum(-1) - eps * a.flatten(2).norm(dim=-1) + b


def _through_relu(a, b, low, up):
    low, up = low.unsqueeze(1), up.unsqueeze(1)
    active, unstable = low >= 0, (low < 0) & (up > 0)
    width = (up - low).clamp_min(1e-12)
    upper_slope = torch.where(unstable, up / width, active.to(a.dtype))
    upper_shift = torch.where(unstable, -upper_slope * low, torch.zeros_like(low))
    lower_slope = torch.where(unstable, (up > -low).to(a.dtype), active.to(a.dtype))
    positive, negative = a.clamp(min=0), a.clamp(max=0)
    b = b + (negative * upper_shift).flatten(2).sum(-1)
    return positive * lower_slope + negative * upper_slope, b


def _through_affine(layer, a, b, in_shape):
    """A -> A J and b -> b + A . layer(0), J the layer's Jacobian."""
    n, k = a.shape[:2]
    if isinstance(layer, nn.Linear):
        if layer.bias is not None:
            b = b + a @ layer.bias
        return a @ layer.weight, b
    if isinstance(layer, nn.Conv2d) and layer.padding_mode == "zeros":
        if layer.bias is not None:
            b = b + (a.sum(dim=(-2, -1)) * layer.bias).sum(-1)
        return _conv_transpose(layer, a.reshape((n * k,) + a.shape[2:]), in_shape).view((n, k) + in_shape), b
    if isinstance(layer, nn.Flatten):
        return a.reshape((n, k) + in_shape), b
    if isinstance(layer, (nn.Identity, nn.Dropout)):
        return a, b
    if is_affine(layer):
        scale, shift = affine_of(layer)
        b = b + (a * shift).flatten(2).sum(-1)
        return a * scale, b
    return _through_vjp(layer, a, b, in_shape)


def _conv_transpose(layer: nn.Conv2d, a, in_shape):
    """The transpose of the convolution's linear part, sized back to its input."""
    out_h, out_w = a.shape[-2:]
    extra = []
    for size, o, s, p, d, kk in zip(in_shape[1:], (out_h, out_w), layer.stride, layer.padding, layer.dilation,
                                    layer.kernel_size):
        extra.append(size - ((o - 1) * s - 2 * p + d * (kk - 1) + 1))
    return F.conv_transpose2d(a, layer.weight, None, layer.stride, layer.padding, tuple(extra), layer.groups,
                              layer.dilation)


def _through_vjp(layer, a, b, in_shape):
    """Any other affine layer: A J by autograd (kept in the graph when gradients are on)."""
    n, k = a.shape[:2]
    keep = torch.is_grad_enabled()
    with torch.enable_grad():
        z = torch.zeros((n * k,) + in_shape, dtype=a.dtype, device=a.device, requires_grad=True)
        out = layer(z)
        (a_in,) = torch.autograd.grad(out, [z], grad_outputs=a.reshape(out.shape), create_graph=keep)
    offset = (out if keep else out.detach())[:1].reshape((1, 1) + a.shape[2:])  # layer(0): the same for every row
    b = b + (a * offset).flatten(2).sum(-1)
    return a_in.view((n, k) + in_shape), b
