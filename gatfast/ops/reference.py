"""Plain-PyTorch semantics of every gatfast op: the test oracle and the `torch` backend.

Math runs in float32 (float64 for float64 storage) whatever the storage dtype, like
the kernels, and results are cast back to the storage dtype. Norm names: None, "linf", "l2".
No gradient passes where a value sits exactly on a clamp's bound (or is NaN). That is
torch.clamp's rule in torch 2.14, but torch 2.11 (the GPU machines' version) passes the
gradient at the bounds, so the rule is written out here (`clamp`) rather than borrowed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _opmath(t: torch.Tensor) -> torch.Tensor:
    return t.double() if t.dtype == torch.float64 else t.float()


def _rows(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-sample values (N,) shaped to broadcast against `like` (N, ...)."""
    return v.view(-1, *([1] * (like.dim() - 1)))


def clamp(v: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """v.clamp(lo, hi) in value (NaN stays NaN); its gradient passes only strictly inside
    (lo, hi), whatever the torch version."""
    return torch.where((v > lo) & (v < hi), v, v.detach().clamp(lo, hi))


def per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    """L2 norm of each sample over every dim but the first."""
    return torch.linalg.vector_norm(t.flatten(1), dim=1)


def scale_grad(t: torch.Tensor, factor: float) -> torch.Tensor:
    """`t` in the forward pass; its gradient is multiplied by `factor` in the backward."""
    if factor == 1.0:
        return t
    return t.detach() + factor * (t - t.detach())


def _project_math(d: torch.Tensor, eps: float, norm: str | None) -> torch.Tensor:
    if norm == "linf":
        return clamp(d, -eps, eps)
    if norm == "l2":
        # eps / max(||d||, eps): 1 inside the ball, and no 0/0 for an all-zero row.
        return d * _rows(eps / per_sample_norm(d).clamp_min(eps), d)
    return d


def project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Projection onto the eps-ball: linf clamps, l2 rescales samples longer than eps."""
    return _project_math(_opmath(delta), eps, norm).to(delta.dtype)


def perturb(x, delta, eps, norm, lo=0.0, hi=1.0, grad_scale=1.0, with_sq=False):
    """clamp(x + project(delta), lo, hi); with_sq also returns ||x_adv - x||^2 per sample.

    The gradient reaching delta through x_adv is multiplied by grad_scale; the one
    through the squared norm is not."""
    xm, p = _opmath(x), _project_math(_opmath(delta), eps, norm)
    x_adv = clamp(xm + scale_grad(p, grad_scale), lo, hi).to(x.dtype)
    if not with_sq:
        return x_adv, None
    unscaled = clamp(xm + p, lo, hi).to(x.dtype)  # same values, gradient not scaled
    sq = (_opmath(unscaled) - xm).square().flatten(1).sum(1)
    return x_adv, sq


@torch.no_grad()
def pgd_step(x_adv, grad, x0, step_size, eps, norm, lo=0.0, hi=1.0):
    """One PGD step: ascend along sign(grad) (linf) or grad/||grad|| (l2), then project
    onto the eps-ball around x0 and into [lo, hi]."""
    a, g, z = _opmath(x_adv), _opmath(grad), _opmath(x0)
    if norm == "linf":
        d = (a + step_size * g.sign() - z).clamp(-eps, eps)
    else:
        gn = per_sample_norm(g)
        step = torch.where(gn > 0, step_size / gn, torch.zeros_like(gn))  # a zero gradient takes no step
        d = _project_math(a + _rows(step, g) * g - z, eps, "l2")
    return (z + d).clamp(lo, hi).to(x_adv.dtype)


def clean_adv_loss(logits_clean, logits_adv, target, alpha=0.5):
    """alpha * CE(clean) + (1 - alpha) * CE(adv), batch mean, and the number of correct
    predictions on each (0-dim int64 tensors)."""
    lc, la = _opmath(logits_clean), _opmath(logits_adv)
    target = target.long()
    ce_c = F.cross_entropy(lc, target, reduction="none")
    ce_a = F.cross_entropy(la, target, reduction="none")
    loss = (alpha * ce_c + (1 - alpha) * ce_a).mean()
    correct_clean = (lc.argmax(1) == target).sum()
    correct_adv = (la.argmax(1) == target).sum()
    return loss, correct_clean, correct_adv
