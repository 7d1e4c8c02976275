"""The networks certify can bound: a chain of layers, each with a bound rule.

A model is taken as a chain when it is an nn.Sequential (nested ones are flattened), or
when it says how to read it as one with `as_sequential()` (gatfast's models do). A
per-channel affine layer says so with `affine() -> (scale, shift)` (gatfast's Normalize
does); BatchNorm in eval mode is one too. A residual block is a `Residual`: the sum of two
chains of the same input (the ResNets' blocks read themselves as one). Anything else is
refused with a TypeError that names it and the supported set: a bound that skipped a layer
would not be a bound.
"""

from __future__ import annotations

import torch
from torch import nn


class Residual(nn.Module):
    """branch(x) + shortcut(x), each a chain of the layers certify bounds; an empty shortcut
    is x itself. The layers are shared with the model, not copied."""

    def __init__(self, branch, shortcut=()):
        super().__init__()
        self.branch, self.shortcut = nn.Sequential(*branch), nn.Sequential(*shortcut)

    def forward(self, x):
        return self.branch(x) + self.shortcut(x)


SUPPORTED = (nn.Linear, nn.Conv2d, nn.ReLU, nn.Flatten, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
             nn.BatchNorm1d, nn.BatchNorm2d, nn.Identity, nn.Dropout, Residual)
SUPPORTED_NAMES = ", ".join(t.__name__ for t in SUPPORTED) + ", and per-channel affine layers with affine()"


def chain(model: nn.Module) -> list[nn.Module]:
    """The model's layers in order, each one certify has a rule for."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if hasattr(model, "as_sequential"):
        model = model.as_sequential()
    if isinstance(model, nn.Sequential):
        return [layer for child in model for layer in chain(child)]
    if isinstance(model, Residual):
        return [Residual(_branch(model.branch), _branch(model.shortcut))]
    if isinstance(model, (nn.BatchNorm1d, nn.BatchNorm2d, nn.Dropout)) and model.training:
        raise TypeError(f"{type(model).__name__} in training mode has no fixed function to bound: call model.eval()")
    if isinstance(model, SUPPORTED) or hasattr(model, "affine"):
        return [model]
    raise TypeError(f"certify cannot bound a {type(model).__name__}; it bounds {SUPPORTED_NAMES}")


def _branch(part: nn.Sequential) -> list[nn.Module]:
    layers = chain(part)
    if any(isinstance(layer, nn.MaxPool2d) for layer in layers):
        # the linear bounds have no rule for max pooling: they stop after it, which a block's
        # two paths cannot both do
        raise TypeError("certify cannot bound a MaxPool2d inside a Residual block")
    return layers


def is_affine(layer: nn.Module) -> bool:
    """A per-channel affine layer: x * scale + shift, scale and shift per channel."""
    return isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)) or hasattr(layer, "affine")


def affine_of(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) shaped to broadcast over (N, C, ...) inputs."""
    if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
        # eval mode (chain checked): (x - running_mean) / sqrt(running_var + eps) * weight + bias
        scale = torch.rsqrt(layer.running_var + layer.eps)
        if layer.weight is not None:
            scale = scale * layer.weight
        shift = -layer.running_mean * scale + (layer.bias if layer.bias is not None else 0.0)
        shape = (1, -1) + (1,) * (2 if isinstance(layer, nn.BatchNorm2d) else 0)
        return scale.view(shape), shift.view(shape)
    return layer.affine()
