"""CROWN-IBP (Zhang et al. 2020, "Towards stable and efficient training of verifiably robust
neural networks"): interval bounds (ibp.py) for every ReLU's input, then one backward pass of
linear bounds from the specification (CROWN, Zhang et al. 2018) down to the input.

The backward pass carries, for each image and each row of the specification, a linear
function A . z + b of the current layer's input z that bounds spec @ output from below:
- an affine layer g (Linear, Conv2d, pooling by averages, Flatten, BatchNorm, per-channel
  affine) maps A to A J_g and adds A . g(0) to b; J_g is taken by autograd (a
  vector-Jacobian product), so every affine layer needs no rule of its own;
- a ReLU with input in [l, u] keeps the side of each coefficient: a positive one takes the
  lower line alpha z (alpha = 1 where u > -l, else 0: CROWN-IBP's adaptive choice), a
  negative one the upper line u (z - l) / (u - l); stable units are exact;
- at the input, A . x' is bounded over the ball and the box in closed form (L-inf: each
  coefficient at the end of the box that minimises it; L2: A . x - eps ||A||_2).

Max pooling has no linear relaxation here: the pass stops after the last MaxPool2d and is
bounded there by that layer's interval (a sound hybrid, tighter than IBP after the pooling).
Upper bounds are the lower bounds of -spec.
"""

from __future__ import annotations

import torch
from torch import nn

from gatfast.certify import ibp
from gatfast.certify.layers import chain
from gatfast.ops import checks


def bounds(model: nn.Module, x: torch.Tensor, eps: float, *, norm: str = "linf", lo: float = 0.0, hi: float = 1.0,
           spec: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """CROWN-IBP lower and upper bounds on model(x') (or spec @ model(x')) over the ball and box."""
    checks.tensor(x, "x")
    norm = checks.norm(norm, allow_none=False)
    eps = checks.nonnegative(eps, "eps")
    lo, hi = checks.box(lo, hi)
    layers = chain(model)
    with torch.no_grad():
        shapes, out = _shapes(layers, x)
        given = spec is not None
        if not given:  # every output unit: the identity over the flattened output
            spec = torch.eye(out[0].numel(), dtype=x.dtype, device=x.device).expand(x.shape[0], -1, -1)
        ibp._check_spec(spec, x)
        spec = spec.reshape(spec.shape[:2] + out.shape[1:])
        intervals = _intervals(layers, x, eps, norm, lo, hi)
        cut = max((i + 1 for i, layer in enumerate(layers) if isinstance(layer, nn.MaxPool2d)), default=0)
        lower = _backward(layers, cut, spec, shapes, intervals, x, eps, norm, lo, hi)
        upper = -_backward(layers, cut, -spec, shapes, intervals, x, eps, norm, lo, hi)
    return (lower, upper) if given else (lower.view(out.shape), upper.view(out.shape))


def _shapes(layers, x):
    """Each layer's input shape (without the batch), and the output, from one forward pass."""
    shapes, h = [], x
    for layer in layers:
        shapes.append(tuple(h.shape[1:]))
        h = layer(h)
    return shapes, h


def _intervals(layers, x, eps, norm, lo, hi) -> dict:
    """IBP's (lower, upper) of each layer's input, from the first layer IBP bounds as an interval."""
    if norm == "linf":
        lower, upper = (x - eps).clamp(lo, hi), (x + eps).clamp(lo, hi)
        mid, rad, start = (upper + lower) / 2, (upper - lower) / 2, 0
    else:
        mid, rad, start = ibp._l2_first_layer(layers, x, eps, None)
    intervals = {}
    for i in range(start, len(layers)):
        intervals[i] = (mid - rad, mid + rad)
        mid, rad = ibp._layer(layers[i], mid, rad)
    intervals[len(layers)] = (mid - rad, mid + rad)  # the output's (a model ending in max pooling)
    return intervals


def _backward(layers, cut, spec, shapes, intervals, x, eps, norm, lo, hi) -> torch.Tensor:
    """The lower bound of spec @ output: the linear bound carried from the last layer to `cut`."""
    n, k = spec.shape[:2]
    a, b = spec, torch.zeros(n, k, dtype=spec.dtype, device=spec.device)
    for i in reversed(range(cut, len(layers))):
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
    """A -> A J and b -> b + A . layer(0), with J the layer's Jacobian (autograd)."""
    n, k = a.shape[:2]
    with torch.enable_grad():
        z = torch.zeros((n * k,) + in_shape, dtype=a.dtype, device=a.device, requires_grad=True)
        out = layer(z)
        (a_in,) = torch.autograd.grad(out, [z], grad_outputs=a.reshape(out.shape))
    offset = out.detach()[:1].reshape((1, 1) + a.shape[2:])  # layer(0): the same for every row
    b = b + (a * offset).flatten(2).sum(-1)
    return a_in.view((n, k) + in_shape), b
