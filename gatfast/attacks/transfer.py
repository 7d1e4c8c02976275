"""Transfer attack: adversarial examples crafted with PGD on a separately trained
surrogate (another seed, and optionally another architecture or method), then shown to
the target. It never touches the target's gradients: a defence that only hides its own
gradients falls to it, which is why a transfer attack beating white-box PGD is a
warning sign."""

from __future__ import annotations

import torch

from gatfast.ops import checks as _checks
from gatfast.attacks.base import Attack, evaluating
from gatfast.attacks.gradient import LOSSES, _default_step, pgd


class Transfer(Attack):
    name = "Transfer"
    white_box = False

    def __init__(self, model, surrogate: torch.nn.Module, *, eps: float, norm: str = "linf", steps: int = 40,
                 step_size: float | None = None, loss: str = "ce", seed: int = 0, surrogate_name: str = "surrogate",
                 batch_size: int = 500, progress: bool = False):
        super().__init__(model, eps=eps, norm=norm, batch_size=batch_size, progress=progress)
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        if not isinstance(surrogate, torch.nn.Module):
            raise TypeError(f"surrogate must be a torch.nn.Module, got {type(surrogate).__name__}")
        if surrogate is model:
            raise ValueError("surrogate must be a separately trained model, not the target itself")
        self.surrogate = surrogate
        self.steps = _checks.count(steps, "steps")
        self.step_size = _default_step(self.eps, self.steps) if step_size is None else \
            _checks.positive(step_size, "step_size")
        self.loss, self.seed, self.surrogate_name = loss, _checks.seed(seed), surrogate_name

    def describe(self):
        return (f"Transfer (PGD-{self.steps}, {self.loss} loss, on {self.surrogate_name}; {self.norm}, "
                f"eps {self.eps:g}; black box for the target)")

    def __call__(self, images, labels):
        self._rng = torch.Generator(images.device).manual_seed(self.seed)
        return super().__call__(images, labels)

    def _attack(self, x, y):
        with evaluating(self.surrogate):
            return pgd(self.surrogate, x, y, eps=self.eps, norm=self.norm, steps=self.steps,
                       step_size=self.step_size, loss=self.loss, rng=self._rng)
