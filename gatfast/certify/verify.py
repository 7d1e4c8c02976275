"""Verified accuracy: an image is verified when, for every input in its ball, the true
class's logit beats every other; bounded on the margins themselves (the specification
matrix), never as the difference of separately bounded logits."""

from __future__ import annotations

import torch
from torch import nn

from gatfast.certify import crown, ibp
from gatfast.ops import checks

METHODS = ("ibp", "crown-ibp", "crown")


def margin_spec(y: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N, num_classes - 1, num_classes): row j is e_y - e_j for each class j != y."""
    n = y.shape[0]
    eye = torch.eye(num_classes, dtype=dtype, device=y.device)
    spec = eye[y].unsqueeze(1) - eye.unsqueeze(0)           # (N, C, C): e_y - e_j for every j
    keep = torch.ones(n, num_classes, dtype=torch.bool, device=y.device)
    keep[torch.arange(n, device=y.device), y] = False       # drop j == y (a zero row)
    return spec[keep].view(n, num_classes - 1, num_classes)


def verified(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, norm: str = "linf",
             lo: float = 0.0, hi: float = 1.0, method: str = "crown-ibp", batch_size: int = 250) -> torch.Tensor:
    """Per image: is every margin's lower bound positive (bool, on x's device). method
    "ibp" (interval bounds), "crown-ibp" or "crown" (per margin, the larger of IBP's bound
    and that method's)."""
    checks.tensor(x, "x")
    y = checks.labels(y, "y", x)
    batch_size = checks.count(batch_size, "batch_size")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            num_classes = model(x[:1]).shape[1]
            out = []
            for i in range(0, len(y), batch_size):
                xb, yb = x[i:i + batch_size], y[i:i + batch_size]
                spec = margin_spec(yb, num_classes, x.dtype)
                if method == "ibp":
                    lower, _ = ibp.bounds(model, xb, eps, norm=norm, lo=lo, hi=hi, spec=spec)
                else:  # per margin, the larger of the two sound lower bounds: IBP's is sometimes
                    # the tighter (CROWN-IBP can be looser on IBP-trained networks)
                    lower = torch.max(*crown.lower_bounds(model, xb, eps, spec, norm=norm, lo=lo, hi=hi,
                                                          full=method == "crown"))
                out.append((lower > 0).all(dim=1))
            return torch.cat(out)
    finally:
        model.train(was_training)


def verified_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, **kwargs) -> float:
    """The share of images verified at eps (see `verified`)."""
    return float(verified(model, x, y, eps, **kwargs).float().mean())
