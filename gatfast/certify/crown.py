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
- a residual block carries A back along each of its two paths and adds the results: both
  see the same input, so the sum is bounded as the one linear function it is;
- at the input, A . x' is bounded over the ball and the box in closed form (L-inf: each
  coefficient at the end of the box that minimises it; L2: A . x - eps ||A||_2).

They differ in the ReLU inputs' [l, u]: CROWN-IBP takes IBP's intervals (one backward pass
in all); CROWN bounds every ReLU's input by a backward pass of its own, from the identity
over that layer (intersected with IBP's interval), which costs a pass per ReLU with as many
rows as the layer has units: affordable for MLPs and the small strided CNNs of certified
training, refused (ValueError, with the size) past `max_rows` rows per image. The ReLUs
inside residual blocks keep IBP's intervals under CROWN too (sound, looser): the ResNets'
layers are far past `max_rows` anyway.

Max pooling has no linear relaxation here: a pass stops after the last MaxPool2d before it
and is bounded there by that layer's interval (sound, and tighter than IBP after the
pooling). Upper bounds are the lower bounds of -spec.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gatfast.certify import ibp
from gatfast.certify.layers import Residual, affine_of, chain, is_affine
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


def lower_bounds(model: nn.Module, x: torch.Tensor, eps: float, spec: torch.Tensor, *, norm: str = "linf",
                 lo: float = 0.0, hi: float = 1.0, full: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(CROWN-IBP's lower bound on spec @ model(x'), IBP's) from one IBP pass, the two that
    certified training mixes and verified accuracy takes the larger of; with full=True
    CROWN's in place of CROWN-IBP's. Only lower bounds: neither use needs the upper ones."""
    ball, layers, shapes, intervals = _prepare(model, x, eps, norm, lo, hi, spec, spec_required=True)
    interval_lower = _spec_interval(layers, spec, intervals, ball)[0]
    if full:
        intervals = _tighten(layers, shapes, intervals, *ball, MAX_ROWS)
    spec = spec.reshape(spec.shape[:2] + shapes[len(layers)])
    return _backward(layers, len(layers), spec, shapes, intervals, ball), interval_lower


def _prepare(model, x, eps, norm, lo, hi, spec, spec_required: bool = False) -> tuple:
    """What every pass starts from, after checking the arguments (spec None: none given):
    the ball (x, eps, norm, lo, hi), the model's chain, its shapes (_shapes) and IBP's intervals."""
    checks.tensor(x, "x")
    if spec is not None or spec_required:
        ibp.check_spec(spec, x)
    ball = ibp.checked_ball(x, eps, norm, lo, hi)
    layers = chain(model)
    return ball, layers, _shapes(layers, x[:1]), ibp.intervals(layers, *ball)


def _spec_interval(layers, spec, intervals, ball):
    """IBP's bounds on spec @ output, from the intervals of the chain without the spec: the
    spec layer (merged into the last Linear, or after the output) takes its input's interval,
    so this equals ibp.bounds(..., spec=spec) without a second pass."""
    spec_layers = ibp.with_spec(layers, spec, ball[0])
    k = len(spec_layers) - 1
    if k not in intervals:  # L2 ball with the spec layer the first weighted one: crossed in closed form
        return ibp.intervals(spec_layers, *ball)[k + 1]
    mid, rad = _carry(spec_layers, k, intervals[k])
    return mid - rad, mid + rad


def _bounds(model, x, eps, norm, lo, hi, spec, *, full, max_rows=MAX_ROWS):
    ball, layers, shapes, intervals = _prepare(model, x, eps, norm, lo, hi, spec)
    out_shape = shapes[len(layers)]
    given = spec is not None
    if not given:  # every output unit: the identity over the flattened output
        spec = torch.eye(_numel(out_shape), dtype=x.dtype, device=x.device).expand(x.shape[0], -1, -1)
    spec = spec.reshape(spec.shape[:2] + out_shape)
    if full:
        intervals = _tighten(layers, shapes, intervals, *ball, max_rows)
    n = len(layers)
    lower = _backward(layers, n, spec, shapes, intervals, ball)
    upper = -_backward(layers, n, -spec, shapes, intervals, ball)
    if given:
        return lower, upper
    return lower.view((-1,) + out_shape), upper.view((-1,) + out_shape)


def _numel(shape) -> int:
    return int(torch.Size(shape).numel())


def _shapes(layers, h) -> dict:
    """Each layer's input shape (without the batch) by index and the output's at
    len(layers), with a Residual's two chains' as dicts at (i, "branch") and (i, "shortcut")
    (the keys of ibp.intervals), from a forward pass of one image h."""
    shapes = {}
    with torch.no_grad():
        for i, layer in enumerate(layers):
            shapes[i] = tuple(h.shape[1:])
            if isinstance(layer, Residual):
                shapes[i, "branch"], shapes[i, "shortcut"] = _shapes(layer.branch, h), _shapes(layer.shortcut, h)
            h = layer(h)
    shapes[len(layers)] = tuple(h.shape[1:])
    return shapes


def _widest(shapes: dict, end: int) -> int:
    """The most units of any layer input up to layer `end`, inside residual blocks too."""
    sizes = [_widest(v, len(v)) if isinstance(k, tuple) else _numel(v)
             for k, v in shapes.items() if (k[0] < end if isinstance(k, tuple) else k <= end)]
    return max(sizes)


def _tighten(layers, shapes, intervals, x, eps, norm, lo, hi, max_rows) -> dict:
    """Full CROWN: the input interval of each ReLU of the chain from a backward pass of its
    own (intersected with IBP's), the intervals after it carried on by IBP from the
    tightened one. ReLUs inside residual blocks keep IBP's intervals (sound, looser)."""
    intervals = dict(intervals)
    ball = (x, eps, norm, lo, hi)
    relaxed = False  # before the first ReLU nothing was relaxed: IBP's interval is as good as CROWN's
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.ReLU) and i in intervals and relaxed:
            rows = _numel(shapes[i])
            if rows > max_rows:
                raise ValueError(f"full CROWN would bound {rows} units of layer {i} ({type(layer).__name__}) "
                                 f"by a pass of their own, past max_rows={max_rows}: use crown-ibp")
            low, up = _identity_bounds(layers, i, shapes, intervals, ball)
            intervals[i] = (torch.max(intervals[i][0], low), torch.min(intervals[i][1], up))
            mid, rad = _carry(layers, i, intervals[i])
            ibp.propagate(layers, mid, rad, intervals, i + 1)
        relaxed = relaxed or isinstance(layer, (nn.ReLU, Residual))
    return intervals


def _carry(layers, i, interval):
    low, up = interval
    return ibp._layer(layers[i], (up + low) / 2, (up - low) / 2)


def _rows_of(intervals: dict, sub: slice) -> dict:
    """The intervals of the images in `sub`, residual blocks' too."""
    return {k: _rows_of(v, sub) if isinstance(v, dict) else (v[0][sub], v[1][sub]) for k, v in intervals.items()}


def _identity_bounds(layers, i, shapes, intervals, ball):
    """Bounds on the input of layer i (the output of layers[:i]) by CROWN, in chunks of
    images and of units so that no more than _CHUNK_FLOATS coefficients live at once."""
    x = ball[0]
    shape, rows = shapes[i], _numel(shapes[i])
    widest = _widest(shapes, i)
    per_image = max(1, _CHUNK_FLOATS // (rows * widest))
    unit_chunk = rows if per_image > 1 else max(1, _CHUNK_FLOATS // widest)
    lows, ups = [], []
    for s in range(0, x.shape[0], per_image):
        sub = slice(s, s + per_image)
        sub_ball = (x[sub],) + ball[1:]
        sub_iv = _rows_of(intervals, sub)
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
    a, b = _carry_back(layers, cut, end, spec, spec.new_zeros(n, k), shapes, intervals)
    if cut > 0:  # bounded by the interval of the layer after the last max pooling
        low, up = (t.unsqueeze(1) for t in intervals[cut])
        return (a.clamp(min=0) * low + a.clamp(max=0) * up).flatten(2).sum(-1) + b
    if norm == "linf":
        low, up = ((x - eps).clamp(lo, hi).unsqueeze(1), (x + eps).clamp(lo, hi).unsqueeze(1))
        return (a.clamp(min=0) * low + a.clamp(max=0) * up).flatten(2).sum(-1) + b
    return (a * x.unsqueeze(1)).flatten(2).sum(-1) - eps * a.flatten(2).norm(dim=-1) + b


def _carry_back(layers, start, end, a, b, shapes, intervals):
    """(A, b) of a bound A . z_end + b carried back to A' . z_start + b', z_i the input of layers[i]."""
    for i in reversed(range(start, end)):
        layer = layers[i]
        if isinstance(layer, nn.ReLU):
            a, b = _through_relu(a, b, *intervals[i])
        elif isinstance(layer, Residual):
            # the block's output is the sum of its two paths from one input: carry A back
            # along each, and add (the shortcut starts from b = 0 so b is counted once)
            a_branch, b = _carry_back(layer.branch, 0, len(layer.branch), a, b, shapes[i, "branch"],
                                      intervals[i, "branch"])
            a_short, b_short = _carry_back(layer.shortcut, 0, len(layer.shortcut), a, torch.zeros_like(b),
                                           shapes[i, "shortcut"], intervals[i, "shortcut"])
            a, b = a_branch + a_short, b + b_short
        else:
            a, b = _through_affine(layer, a, b, shapes[i])
    return a, b


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
