"""Interval bound propagation (Gowal et al. 2018, "On the effectiveness of interval bound
propagation for training verifiably robust models"): sound elementwise lower and upper
bounds on a network's outputs for every input in a norm ball intersected with the pixel box.

Intervals travel as (centre, radius): an affine map W moves the centre by W and the radius
by |W|, a monotone map (ReLU, max pooling) applies to both ends, and a residual block adds
the intervals of its two paths (which forgets that both see one input: the linear bounds
of crown.py keep it). For an L2 ball the first
layer with weights takes the dual norm instead (W x +- eps ||W_i||_2, Gowal et al.'s
treatment of other norms), after folding any per-channel affine layers in front of it into
its weights; the box is then not used, which is sound (the ball alone is a superset).

A specification C becomes the last layer: merged with a final Linear layer (C W, C b) or
appended after any other one. The bounds are then on the margins logit_y - logit_j
directly, tighter than subtracting logit bounds.

Everything here is differentiable in the model's parameters, so certified training
(gatfast.train.methods.CROWNIBP) backpropagates through the bounds; `verified` runs them
under no_grad.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gatfast.certify.layers import Residual, affine_of, chain, is_affine
from gatfast.ops import checks


class SpecLinear(nn.Module):
    """One linear map per image: out[n] = weight[n] @ z[n] + bias[n], weight (N, K, inputs).
    The specification, merged with the model's last Linear layer or standing after it."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.weight, self.bias = weight, bias

    def forward(self, z):
        return torch.einsum("nki,ni->nk", self.weight, z.flatten(1)) + self.bias


def with_spec(layers: list[nn.Module], spec: torch.Tensor | None, x: torch.Tensor) -> list[nn.Module]:
    """The chain with the specification as its last layer (merged into a final Linear)."""
    if spec is None:
        return layers
    check_spec(spec, x)
    last = layers[-1] if layers else None
    if isinstance(last, nn.Linear):
        bias = spec @ last.bias if last.bias is not None else spec.new_zeros(spec.shape[:2])
        return layers[:-1] + [SpecLinear(spec @ last.weight, bias)]
    return layers + [SpecLinear(spec, spec.new_zeros(spec.shape[:2]))]


def check_spec(spec, x: torch.Tensor) -> None:
    if not isinstance(spec, torch.Tensor) or spec.dim() != 3 or spec.shape[0] != x.shape[0]:
        raise ValueError(f"spec must be a tensor of shape (N, K, outputs) with N = {x.shape[0]}, got "
                         f"{tuple(spec.shape) if isinstance(spec, torch.Tensor) else type(spec).__name__}")


def bounds(model: nn.Module, x: torch.Tensor, eps: float, *, norm: str = "linf", lo: float = 0.0, hi: float = 1.0,
           spec: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """IBP lower and upper bounds on model(x') (or spec @ model(x') when spec of shape
    (N, K, outputs) is given) over every x' with ||x' - x|| <= eps and lo <= x' <= hi."""
    checks.tensor(x, "x")
    ball = checked_ball(x, eps, norm, lo, hi)
    layers = with_spec(chain(model), spec, x)
    return intervals(layers, *ball)[len(layers)]


def checked_ball(x: torch.Tensor, eps, norm, lo, hi) -> tuple:
    """(x, eps, norm, lo, hi) with eps, norm and the box checked and normalised: the ball and
    box that every bound here and in crown.py is over."""
    norm = checks.norm(norm, allow_none=False)
    eps = checks.nonnegative(eps, "eps")
    lo, hi = checks.box(lo, hi)
    return x, eps, norm, lo, hi


def intervals(layers: list[nn.Module], x: torch.Tensor, eps: float, norm: str, lo: float, hi: float) -> dict:
    """IBP's (lower, upper) of the input of every layer that it bounds as an interval, and
    of the output (key len(layers)). Under an L2 ball the layers up to the first weighted
    one are crossed in closed form, so they have no entry. A Residual at i also has the
    intervals of its two chains, as dicts of their own at keys (i, "branch") and (i, "shortcut")."""
    if norm == "linf":
        lower, upper = (x - eps).clamp(lo, hi), (x + eps).clamp(lo, hi)
        mid, rad, start = (upper + lower) / 2, (upper - lower) / 2, 0
    else:
        mid, rad, start = _l2_first_layer(layers, x, eps)
    out = {}
    propagate(layers, mid, rad, out, start)
    return out


def propagate(layers, mid: torch.Tensor, rad: torch.Tensor, out: dict, start: int = 0):
    """Carries the interval (mid +- rad) at the input of layers[start] to the output,
    writing into `out` the interval of every input from `start` on (see `intervals`);
    returns the output's (mid, rad)."""
    for i in range(start, len(layers)):
        out[i] = (mid - rad, mid + rad)
        if isinstance(layers[i], Residual):
            # each path from the block's input, then their sum (the endpoints add)
            out[i, "branch"], out[i, "shortcut"] = {}, {}
            mid_b, rad_b = propagate(layers[i].branch, mid, rad, out[i, "branch"])
            mid_s, rad_s = propagate(layers[i].shortcut, mid, rad, out[i, "shortcut"])
            mid, rad = mid_b + mid_s, rad_b + rad_s
        else:
            mid, rad = _layer(layers[i], mid, rad)
    out[len(layers)] = (mid - rad, mid + rad)
    return mid, rad


def _layer(layer: nn.Module, mid: torch.Tensor, rad: torch.Tensor):
    if isinstance(layer, nn.Linear):
        return F.linear(mid, layer.weight, layer.bias), F.linear(rad, layer.weight.abs())
    if isinstance(layer, SpecLinear):
        return layer(mid), torch.einsum("nki,ni->nk", layer.weight.abs(), rad.flatten(1))
    if isinstance(layer, nn.Conv2d):
        conv = dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation, groups=layer.groups)
        return (F.conv2d(mid, layer.weight, layer.bias, **conv), F.conv2d(rad, layer.weight.abs(), None, **conv))
    if is_affine(layer):
        scale, shift = affine_of(layer)
        return mid * scale + shift, rad * scale.abs()
    if isinstance(layer, (nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten)):
        # monotone (ReLU, max pooling) or linear with non-negative weights (average pooling):
        # both ends map to the ends of the image
        lower, upper = layer(mid - rad), layer(mid + rad)
        return (upper + lower) / 2, (upper - lower) / 2
    if isinstance(layer, (nn.Identity, nn.Dropout)):  # Dropout: the model is in eval mode (chain checks)
        return mid, rad
    if isinstance(layer, Residual):
        return propagate([layer], mid, rad, {})
    raise TypeError(f"no interval rule for {type(layer).__name__}")  # chain() refuses these first


def _l2_first_layer(layers, x, eps):
    """The L2 ball through the leading per-channel affine layers (and a Flatten) and the
    first weighted layer, in closed form (the dual norm); returns (mid, rad, index of the
    next layer to bound)."""
    scale = torch.ones(1, x.shape[1], *[1] * (x.dim() - 2), dtype=x.dtype, device=x.device)
    mid, i, flat = x, 0, False
    while i < len(layers) and (is_affine(layers[i]) or isinstance(layers[i], (nn.Identity, nn.Dropout, nn.Flatten))):
        if is_affine(layers[i]):
            s, b = affine_of(layers[i])
            scale, mid = scale * s, mid * s + b
        elif isinstance(layers[i], nn.Flatten):
            flat, mid = True, layers[i](mid)
        i += 1
    if i == len(layers) or not isinstance(layers[i], (nn.Linear, SpecLinear, nn.Conv2d)):
        # no weighted layer to take the dual norm: the ball's bounding box, scaled
        rad = eps * (scale.abs() * torch.ones_like(x))
        return mid, (rad.flatten(1) if flat else rad), i
    layer = layers[i]
    if isinstance(layer, (nn.Linear, SpecLinear)):
        # the layer sees W diag(scale) over the ball of x (scale per input feature); each
        # output row moves by at most eps times that row's L2 norm
        out = layer(mid.flatten(1))
        weight = layer.weight * (scale * torch.ones_like(x[:1])).flatten()
        return out, eps * weight.norm(dim=-1).expand_as(out), i + 1
    if layer.groups != 1:
        raise TypeError("an L2 ball's first Conv2d must have groups=1")
    conv = dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation)
    weight = layer.weight * scale.view(1, -1, 1, 1)  # each input channel's weights times its scale
    out = F.conv2d(mid, layer.weight, layer.bias, **conv)
    # an output position sees at most the whole kernel: its L2 norm bounds that position's change
    rad = eps * weight.flatten(1).norm(dim=1).view(1, -1, 1, 1).expand_as(out)
    return out, rad, i + 1
