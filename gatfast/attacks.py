"""Attacks on classifiers that take images in [0, 1].

`pgd` is the white-box workhorse: training methods (pgd_at, trades, the fgsm_rs guard)
and evaluation share it, and its inner loop is the fused `gatfast.pgd_step` op.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from gatfast import _checks, ops
from gatfast.reference import random_start


@contextlib.contextmanager
def frozen(model: torch.nn.Module):
    """Parameters stop asking for gradients while an attack runs (the attack needs the
    input gradient only), and come back as they were, even on an exception."""
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)


def margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Carlini-Wagner margin: best wrong logit minus the true logit, per sample."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    wrong = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return wrong - true


def _loss(name: str, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if name == "ce":
        return F.cross_entropy(logits.float(), y, reduction="sum")
    return margin_loss(logits.float(), y).sum()


def pgd(model, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf", steps: int = 10,
        step_size: float | None = None, random_init: bool = True, loss: str = "ce",
        generator: torch.Generator | None = None) -> torch.Tensor:
    """Projected gradient ascent on `loss` ("ce" or "margin") within the eps-ball around x
    and the [0, 1] box. step_size defaults to 2.5 * eps / steps (Madry et al.). The model's
    mode is left as it is: call model.eval() first to attack the deployed model."""
    eps = _checks.positive(eps, "eps")
    norm = _checks.norm(norm, allow_none=False)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    if loss not in ("ce", "margin"):
        raise ValueError(f"loss must be 'ce' or 'margin', got {loss!r}")
    step_size = 2.5 * eps / max(steps, 1) if step_size is None else _checks.positive(step_size, "step_size")
    x0 = x.detach()
    x_adv = random_start(x0, eps, norm, generator) if random_init else x0.clone()
    with frozen(model):
        for _ in range(steps):
            x_adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(_loss(loss, model(x_adv), y), [x_adv])
            x_adv = ops.pgd_step(x_adv.detach(), grad, x0, step_size, eps, norm)
    return x_adv.detach()
