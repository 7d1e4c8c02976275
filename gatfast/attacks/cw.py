"""Carlini-Wagner L2 (2017): the smallest L2 perturbation that flips the prediction, found
by optimising in tanh space with a per-sample binary search over the trade-off c.

As an attack in a threat model it answers "accuracy at an L2 budget": for each sample it
returns the smallest adversarial example found if its L2 norm is within `budget`, else
the clean image (a sample the attack could not break within the budget). The norms of
all examples found are kept in `last_norms` (inf where none was found).
"""

from __future__ import annotations

import torch

from gatfast.ops import checks as _checks
from gatfast.attacks.base import Attack, margin_loss


class CW(Attack):
    name = "CW-L2"

    def __init__(self, model, *, budget: float, steps: int = 100, search_steps: int = 5, c: float = 1.0,
                 lr: float = 0.05, kappa: float = 0.0, batch_size: int = 500, progress: bool = False):
        super().__init__(model, eps=_checks.positive(budget, "budget"), norm="l2", batch_size=batch_size,
                         progress=progress)
        self.steps = _checks.count(steps, "steps")
        self.search_steps = _checks.count(search_steps, "search_steps")
        self.c = _checks.positive(c, "c")
        self.lr = _checks.positive(lr, "lr")
        self.kappa = _checks.nonnegative(kappa, "kappa")
        self.last_norms = None

    def describe(self):
        return (f"{self.name} (accuracy at L2 <= {self.eps:g}; {self.search_steps} binary-search steps over c "
                f"from {self.c:g}, {self.steps} Adam steps of lr {self.lr:g} each, white box)")

    def __call__(self, images, labels):
        self._norms = []
        out = super().__call__(images, labels)
        self.last_norms = torch.cat(self._norms)
        return out

    def _attack(self, x, y):
        n = x.shape[0]
        rows = (-1,) + (1,) * (x.dim() - 1)
        # x = (tanh(w) + 1) / 2 keeps every iterate inside the [0, 1] box.
        w0 = torch.atanh((2 * x - 1).clamp(-1 + 1e-6, 1 - 1e-6))
        c = torch.full((n,), self.c, device=x.device)
        lower = torch.zeros(n, device=x.device)
        upper = torch.full((n,), float("inf"), device=x.device)
        best_norm = torch.full((n,), float("inf"), device=x.device)
        best = x.clone()
        for _ in range(self.search_steps):
            w = w0.clone().requires_grad_(True)
            opt = torch.optim.Adam([w], lr=self.lr)
            found = torch.zeros(n, dtype=torch.bool, device=x.device)
            for _ in range(self.steps):
                x_adv = (torch.tanh(w) + 1) / 2
                sq = (x_adv - x).flatten(1).square().sum(1)
                margin = margin_loss(self.model(x_adv).float(), y)
                with torch.no_grad():
                    norm = sq.sqrt()
                    better = (margin > 0) & (norm < best_norm)
                    best_norm = torch.where(better, norm, best_norm)
                    best[better] = x_adv[better]
                    found |= margin > 0
                # minimise ||delta||^2 + c * max(-margin, -kappa): push the margin past kappa
                loss = (sq + c * torch.clamp(-margin, min=-self.kappa)).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            # success: try a smaller c (less weight on misclassifying); failure: a larger one
            upper = torch.where(found, torch.minimum(upper, c), upper)
            lower = torch.where(found, lower, torch.maximum(lower, c))
            c = torch.where(torch.isinf(upper), c * 10, (lower + upper) / 2)
        self._norms.append(best_norm)
        within = best_norm <= self.eps
        return torch.where(within.view(rows), best, x)
