"""White-box gradient attacks: FGSM and PGD, stepping with the fused `gatfast.pgd_step`.

`pgd` (a function) is the training methods' inner loop: plain Madry PGD returning the
last iterate. `PGD` (a class) is the evaluation attack: it keeps, per sample, the
strongest point it visited (highest CW margin, so a misclassified point beats any
correctly classified one) over all steps and restarts, and stops attacking a sample as
soon as it is misclassified (its result cannot get more wrong), which is also what
makes it fast on the samples a model does not resist.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gatfast import ops
from gatfast.ops import checks as _checks
from gatfast.ops.amp import autocast
from gatfast.attacks.base import Attack, check_eps, frozen, margin_loss
from gatfast.ops.ball import random_start

LOSSES = ("ce", "margin")


def _loss(name: str, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if name == "ce":
        return F.cross_entropy(logits.float(), y, reduction="sum")
    return margin_loss(logits.float(), y).sum()


def _default_step(eps: float, steps: int) -> float:
    return 2.5 * eps / max(steps, 1)  # Madry et al.: enough to cross the ball and come back


def pgd(model, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf", steps: int = 10,
        step_size: float | None = None, random_init: bool = True, loss: str = "ce",
        rng: torch.Generator | None = None) -> torch.Tensor:
    """Projected gradient ascent on `loss` ("ce" or "margin") within the eps-ball around x
    and the [0, 1] box; returns the last iterate. step_size defaults to 2.5 * eps / steps.
    The model's mode is left as it is (training methods attack the model in training
    mode); call model.eval() first to attack the deployed model."""
    eps = _checks.positive(eps, "eps")
    norm = _checks.norm(norm, allow_none=False)
    steps = _checks.count(steps, "steps", 0)
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    step_size = _default_step(eps, steps) if step_size is None else _checks.positive(step_size, "step_size")
    x0 = x.detach()
    x_adv = random_start(x0, eps, norm, rng) if random_init else x0.clone()
    with frozen(model):
        for _ in range(steps):
            x_adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(_loss(loss, model(x_adv), y), [x_adv])
            x_adv = ops.pgd_step(x_adv.detach(), grad, x0, step_size, eps, norm)
    return x_adv.detach()


class FGSM(Attack):
    """One step of size eps along sign(grad) (linf) or grad / ||grad||_2 (l2), from x."""

    name = "FGSM"

    def _attack(self, x, y):
        x_in = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(_loss("ce", self.model(x_in), y), [x_in])
        return ops.pgd_step(x, grad, x, self.eps, self.eps, self.norm)


class PGD(Attack):
    """PGD with `steps` steps (default 100), a random start, `restarts` runs (the strongest
    point per sample is kept), loss "ce" or "margin" (Carlini-Wagner), optionally under
    autocast (amp "bf16" or "fp16"; the loss and the step stay in float32).

    step_size=None (the default) takes APGD's adaptive schedule (apgd.py: momentum, a step
    that starts at 2 eps and halves where progress stalls); a number makes it Madry et
    al.'s PGD with that fixed step. On gatfast's GAT mnist5k model a fixed step was
    measured 7 points weaker at the same 100 steps (README), hence the default."""

    name = "PGD"

    def __init__(self, model, *, eps: float, norm: str = "linf", steps: int = 100, step_size: float | None = None,
                 restarts: int = 1, loss: str = "ce", random_start: bool = True, amp: str | None = None,
                 seed: int = 0, batch_size: int = 250, progress: bool = False):
        super().__init__(model, eps=eps, norm=norm, batch_size=batch_size, progress=progress)
        self.steps = _checks.count(steps, "steps")
        self.step_size = None if step_size is None else _checks.positive(step_size, "step_size")
        self.restarts = _checks.count(restarts, "restarts")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        self.loss = loss
        self.random_start = bool(random_start)
        self.amp = _checks.amp(amp)
        self.seed = _checks.seed(seed)
        self.name = f"PGD-{self.steps}" + ("" if loss == "ce" else "-margin") + \
                    ("" if self.restarts == 1 else f"x{self.restarts}")
        self._rng = None
        self._adaptive = None
        if self.step_size is None:
            from gatfast.attacks.apgd import APGD
            self._adaptive = APGD(model, eps=self.eps, norm=self.norm, steps=self.steps, restarts=self.restarts,
                                  loss=loss, random_start=self.random_start, amp=self.amp, seed=self.seed,
                                  batch_size=self.batch_size)

    def describe(self):
        step = "APGD's adaptive step size" if self.step_size is None else f"step {self.step_size:.4g}"
        return (f"{self.name} ({self.norm}, eps {self.eps:g}, {self.steps} steps, {step}, "
                f"{self.restarts} restart{'s' if self.restarts > 1 else ''}, "
                f"{'random' if self.random_start else 'clean'} start, {self.loss} loss, white box)")

    def __call__(self, images, labels):
        if self._adaptive is not None:  # APGD's schedule: APGD itself, with this attack's seed and settings
            self._adaptive.progress = self.progress
            return self._adaptive(images, labels)
        self._rng = torch.Generator(images.device).manual_seed(self.seed)
        return super().__call__(images, labels)

    def _logits(self, x):
        with autocast(self.amp, x.device):
            return self.model(x).float()

    def _run(self, x0, y, best, best_margin, todo):
        """One restart on the samples `todo`, updating best / best_margin in place."""
        x_adv = random_start(x0[todo], self.eps, self.norm, self._rng) if self.random_start \
            else x0[todo].clone()
        for t in range(self.steps + 1):
            last = t == self.steps
            x_adv.requires_grad_(not last)
            with torch.set_grad_enabled(not last):
                logits = self._logits(x_adv)
            margin = margin_loss(logits.detach(), y[todo])
            better = margin > best_margin[todo]
            best[todo[better]] = x_adv.detach()[better]
            best_margin[todo[better]] = margin[better]
            if last:
                return
            (grad,) = torch.autograd.grad(_loss(self.loss, logits, y[todo]), [x_adv])
            x_adv = ops.pgd_step(x_adv.detach(), grad, x0[todo], self.step_size, self.eps, self.norm)
            still_correct = best_margin[todo] <= 0  # a broken sample cannot break further
            if not bool(still_correct.all()):
                todo, x_adv = todo[still_correct], x_adv[still_correct]
                if todo.numel() == 0:
                    return

    def _attack(self, x, y):
        best = x.clone()
        best_margin = torch.full((x.shape[0],), float("-inf"), device=x.device)
        for _ in range(self.restarts):
            todo = torch.nonzero(best_margin <= 0).squeeze(1)
            if todo.numel() == 0:
                break
            self._run(x, y, best, best_margin, todo)
        return best


__all__ = ["FGSM", "PGD", "pgd", "check_eps"]
