"""Random points of the eps-ball: the random start of PGD, FGSM-RS and the GAT step's
first generator step (production code; the oracle in reference.py does not use it)."""

from __future__ import annotations

import torch


def random_start(x: torch.Tensor, eps: float, norm: str, rng: torch.Generator | None = None) -> torch.Tensor:
    """A uniform point of the linf ball, or a random direction at a uniform radius in the l2
    ball, around x, clamped to [0, 1]."""
    if norm == "linf":
        noise = torch.rand(x.shape, generator=rng, device=x.device, dtype=x.dtype)
        delta = (2 * noise - 1) * eps
    else:
        direction = torch.randn(x.shape, generator=rng, device=x.device, dtype=x.dtype)
        direction = direction / direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
        radius = torch.rand(x.shape[0], generator=rng, device=x.device, dtype=x.dtype) * eps
        delta = direction * radius.view(-1, *[1] * (x.dim() - 1))
    return (x + delta).clamp(0, 1)
