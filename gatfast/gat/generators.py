"""Perturbation generators: networks that map the classifier's input gradient (as in
the GAT paper), the image (AdvGAN-style) or both to a bounded perturbation delta.

Bounds: `linf` gives eps * tanh(raw); `l2` projects raw onto the L2 ball of radius eps;
`penalty` leaves delta unbounded (the paper's soft bound: the training loss adds
c_g * ||delta||^2 and perturb clamps to the box only). The network keeps the spatial
size, so one generator fits 28x28 grey and 32x32 colour input alike.

resolution="half" runs the residual body at half the spatial size (a stride-2 head and a
transposed-convolution tail) and adds a 1x1 per-pixel path from the input to the output:
about a quarter of the cost, while the pixel path keeps per-pixel precision (the body
gives context). On a CPU the full-size body costs more than the classifier it attacks.

latent_dim > 0 adds a random code z ~ N(0, I), drawn anew on every call and broadcast
over the image as extra input channels, so one (x, grad) can map to many perturbations
(the diversity that learned attackers such as L2L-DA rely on).
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from gatfast import ops
from gatfast.ops import checks as _checks

INPUTS = ("grad", "image", "image+grad")
BOUNDS = ("linf", "l2", "penalty")
RESOLUTIONS = ("full", "half")


def normalize_per_sample(g: torch.Tensor) -> torch.Tensor:
    """g scaled to unit root-mean-square per sample (an all-zero sample stays zero), so
    the generator sees the gradient's direction whatever its magnitude."""
    rms = g.flatten(1).square().mean(1).sqrt()
    return g / rms.clamp_min(torch.finfo(g.dtype).tiny).view(-1, *([1] * (g.dim() - 1)))


class _ResidualBlock(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, h):
        return h + self.conv2(F.relu(self.conv1(F.relu(h))))


class PerturbationGenerator(nn.Module):
    """delta = bound(net(input)), with input the normalised gradient, the image, or both."""

    def __init__(self, in_channels: int, eps: float, *, bound: str = "linf", input: str = "grad",
                 width: int = 32, blocks: int = 2, latent_dim: int = 0, resolution: str = "full"):
        super().__init__()
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
        if bound not in BOUNDS:
            raise ValueError(f"bound must be one of {', '.join(BOUNDS)}; got {bound!r}")
        if input not in INPUTS:
            raise ValueError(f"input must be one of {', '.join(INPUTS)}; got {input!r}")
        width = _checks.count(width, "width")
        blocks = _checks.count(blocks, "blocks", 0)
        self.latent_dim = _checks.count(latent_dim, "latent_dim", 0)
        self.eps = _checks.positive(eps, "eps")
        self.bound, self.input, self.in_channels = bound, input, in_channels
        channels_in = in_channels * (2 if input == "image+grad" else 1) + self.latent_dim
        if resolution not in RESOLUTIONS:
            raise ValueError(f"resolution must be 'full' or 'half', got {resolution!r}")
        self.resolution = resolution
        half = resolution == "half"
        self.head = nn.Conv2d(channels_in, width, 3, stride=2 if half else 1, padding=1)
        self.body = nn.Sequential(*[_ResidualBlock(width) for _ in range(blocks)])
        self.tail = (nn.ConvTranspose2d(width, in_channels, 4, stride=2, padding=1) if half
                     else nn.Conv2d(width, in_channels, 3, padding=1))
        self.pixel = nn.Conv2d(channels_in, in_channels, 1) if half else None
        # Start small: an untrained generator should not jump to the corners of the ball.
        for out in (self.tail, self.pixel):
            if out is not None:
                nn.init.zeros_(out.bias)
                with torch.no_grad():
                    out.weight.mul_(0.1)

    @property
    def reads_gradient(self) -> bool:
        """Whether forward needs the input gradient (every input but "image")."""
        return self.input != "image"

    def _features(self, x, grad):
        needs_grad = self.reads_gradient
        if needs_grad and grad is None:
            raise ValueError(f"this generator's input is {self.input!r}: pass the input gradient as grad")
        if grad is not None:
            _checks.like(grad, "grad", x, "x")
        parts = []
        if self.input != "grad":
            parts.append(2 * x - 1)  # [0, 1] images centred
        if needs_grad:
            parts.append(normalize_per_sample(grad))
        if self.latent_dim:
            z = torch.randn(x.shape[0], self.latent_dim, 1, 1, device=x.device, dtype=x.dtype)
            parts.append(z.expand(-1, -1, *x.shape[2:]))
        return torch.cat(parts, 1) if len(parts) > 1 else parts[0]

    def forward(self, x: torch.Tensor, grad: torch.Tensor | None = None) -> torch.Tensor:
        _checks.tensor(x, "x")
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must have shape (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if self.resolution == "half" and (x.shape[2] % 2 or x.shape[3] % 2):
            raise ValueError(f"resolution='half' needs even image sides, got {tuple(x.shape[2:])}")
        features = self._features(x, grad)
        raw = self.tail(F.relu(self.body(self.head(features))))
        if self.pixel is not None:
            raw = raw + self.pixel(features)
        if self.bound == "linf":
            return self.eps * torch.tanh(raw)
        if self.bound == "l2":
            return ops.project(raw, self.eps, "l2")
        return raw
