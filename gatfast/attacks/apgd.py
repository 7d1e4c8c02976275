"""Auto-PGD (Croce and Hein, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks", 2020): PGD whose step size needs no tuning.

Each run starts at a random point of the ball with step size eta = 2 eps and takes
momentum steps (alpha = 0.75):

    z      = P(x_k + eta * d(grad f(x_k)))           d = sign (linf) or grad / ||grad||_2 (l2)
    x_k+1  = P(x_k + alpha (z - x_k) + (1 - alpha)(x_k - x_k-1))

where P projects onto the eps-ball around the clean image and the [0, 1] box (the fused
`gatfast.perturb` op). At checkpoints (the first after 22% of the steps, then ever
shorter intervals, at least 6% of the steps) a sample's step size halves, and it
restarts from the best point it has seen, when its loss rose in no more than rho = 75%
of the steps since the last checkpoint, or when neither its step size nor its best loss
changed at the last one.

Losses: "ce"; "margin", the Carlini-Wagner margin; "dlr", the difference of logits ratio -(z_y - max_{i!=y} z_i) /
(z_pi1 - z_pi3), invariant to the scale of the logits; and the targeted DLR
-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2) of APGD-T, run once per target class t,
the `targets` classes the clean image's logits rank highest after y.

As in gatfast's PGD, a sample leaves the batch as soon as it is misclassified (its
misclassified point is kept), so the steps go to the samples still standing; every
other quantity is per sample, so that changes nothing for them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gatfast import ops
from gatfast.ops import checks as _checks
from gatfast.ops.amp import autocast
from gatfast.attacks.base import Attack, margin_loss

LOSSES = ("ce", "dlr", "margin")


def checkpoints(steps: int) -> list[int]:
    """The iterations (1-based counts of steps taken) after which APGD checks its progress:
    intervals of 22% of the steps, shrinking by 3% of them each time to at least 6%."""
    first, smallest, shrink = (max(int(f * steps), 1) for f in (0.22, 0.06, 0.03))
    points, at, interval = [], 0, first
    while at + interval <= steps:
        at += interval
        points.append(at)
        interval = max(interval - shrink, smallest)
    return points


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12), per sample (needs >= 3 classes)."""
    ranked, order = logits.sort(dim=1, descending=True)
    true = logits.gather(1, y[:, None]).squeeze(1)
    best_other = torch.where(order[:, 0] == y, ranked[:, 1], ranked[:, 0])
    return -(true - best_other) / (ranked[:, 0] - ranked[:, 2] + 1e-12)


def targeted_dlr_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12), per sample (needs >= 4 classes)."""
    ranked = logits.sort(dim=1, descending=True)[0]
    true = logits.gather(1, y[:, None]).squeeze(1)
    aim = logits.gather(1, target[:, None]).squeeze(1)
    return -(true - aim) / (ranked[:, 0] - 0.5 * (ranked[:, 2] + ranked[:, 3]) + 1e-12)


class APGD(Attack):
    """Auto-PGD: `steps` steps (100 in AutoAttack), `restarts` runs on the samples still
    standing, loss "ce" or "dlr"; `targets` > 0 makes it APGD-T (targeted DLR against
    each of the `targets` most likely wrong classes in turn, AutoAttack: 9)."""

    def __init__(self, model, *, eps: float, norm: str = "linf", steps: int = 100, restarts: int = 1,
                 loss: str = "ce", targets: int = 0, rho: float = 0.75, random_start: bool = True,
                 amp: str | None = None, seed: int = 0, batch_size: int = 250, progress: bool = False):
        super().__init__(model, eps=eps, norm=norm, batch_size=batch_size, progress=progress)
        self.steps = _checks.count(steps, "steps")
        self.restarts = _checks.count(restarts, "restarts")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        self.targets = _checks.count(targets, "targets", 0)
        if self.targets and loss != "dlr":
            raise ValueError("targets > 0 (APGD-T) runs the targeted DLR loss: pass loss='dlr'")
        self.loss = loss
        self.rho = _checks.fraction(rho, "rho", zero=False)
        self.random_start = bool(random_start)
        self.amp = _checks.amp(amp)
        self.seed = _checks.seed(seed)
        self.name = "APGD-T" if self.targets else f"APGD-{loss.upper()}"
        self._rng = None

    def describe(self):
        what = (f"targeted DLR loss against the {self.targets} most likely wrong classes" if self.targets
                else f"{self.loss} loss")
        return (f"{self.name} ({self.norm}, eps {self.eps:g}, {self.steps} steps of adaptive size, "
                f"{self.restarts} restart{'s' if self.restarts > 1 else ''}, {what}, white box)")

    def __call__(self, images, labels):
        self._rng = torch.Generator(images.device).manual_seed(self.seed)
        return super().__call__(images, labels)

    # ---- one run --------------------------------------------------------------------------

    def _start(self, x0: torch.Tensor) -> torch.Tensor:
        """A random point on the surface of the linf ball (a random direction of length eps
        for l2), clamped to the box, as the reference implementation starts."""
        if not self.random_start:
            return x0.clone()
        rows = (-1,) + (1,) * (x0.dim() - 1)
        if self.norm == "linf":
            t = 2 * torch.rand(x0.shape, generator=self._rng, device=x0.device, dtype=x0.dtype) - 1
            scale = t.flatten(1).abs().amax(1).clamp_min(1e-12)
        else:
            t = torch.randn(x0.shape, generator=self._rng, device=x0.device, dtype=x0.dtype)
            scale = t.flatten(1).norm(dim=1).clamp_min(1e-12)
        return (x0 + self.eps * t / scale.view(rows)).clamp(0, 1)

    def _direction(self, grad: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return grad.sign()
        norms = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
        return grad / norms.view((-1,) + (1,) * (grad.dim() - 1))

    def _loss_and_grad(self, x, y, target):
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            with autocast(self.amp, x.device):
                logits = self.model(x).float()
            if target is not None:
                loss = targeted_dlr_loss(logits, y, target)
            elif self.loss == "dlr":
                loss = dlr_loss(logits, y)
            elif self.loss == "margin":
                loss = margin_loss(logits, y)
            else:
                loss = F.cross_entropy(logits, y, reduction="none")
            (grad,) = torch.autograd.grad(loss.sum(), [x])
        return logits.detach(), loss.detach(), grad

    def _run(self, x0, y, target, found: torch.Tensor, out: torch.Tensor, kept: torch.Tensor, todo: torch.Tensor):
        """One run on the samples `todo` (indices into the batch); a sample it misclassifies
        is marked in `found` and its point written to `out`; one it does not gets its
        highest-loss point written there if that beats the loss `kept` from earlier runs."""
        rows = (-1,) + (1,) * (x0.dim() - 1)
        marks = set(checkpoints(self.steps))
        x_clean, y, target = x0[todo], y[todo], None if target is None else target[todo]
        x = self._start(x_clean)
        logits, loss, grad = self._loss_and_grad(x, y, target)
        eta = torch.full((len(todo),), 2 * self.eps, device=x0.device)
        best_loss, x_best, grad_best = loss.clone(), x.clone(), grad.clone()
        x_prev, loss_prev = x.clone(), loss.clone()
        rises = torch.zeros(len(todo), device=x0.device)
        best_at_check, reduced_at_check = best_loss.clone(), torch.ones(len(todo), dtype=torch.bool, device=x0.device)
        since_check = 0
        for step in range(self.steps + 1):
            broken = logits.argmax(1) != y
            if bool(broken.any()):
                found[todo[broken]] = True
                out[todo[broken]] = x[broken]
                keep = ~broken
                todo, x_clean, y, x, grad, eta = todo[keep], x_clean[keep], y[keep], x[keep], grad[keep], eta[keep]
                target = None if target is None else target[keep]
                best_loss, x_best, grad_best = best_loss[keep], x_best[keep], grad_best[keep]
                x_prev, loss_prev, rises = x_prev[keep], loss_prev[keep], rises[keep]
                best_at_check, reduced_at_check = best_at_check[keep], reduced_at_check[keep]
                if todo.numel() == 0:
                    return
            if step == self.steps:
                break
            if step in marks:
                interval = since_check
                stalled = ~reduced_at_check & (best_at_check >= best_loss)
                reduce = (rises <= self.rho * interval) | stalled
                eta = torch.where(reduce, eta / 2, eta)
                x = torch.where(reduce.view(rows), x_best, x)
                grad = torch.where(reduce.view(rows), grad_best, grad)
                reduced_at_check, best_at_check = reduce, best_loss.clone()
                rises.zero_()
                since_check = 0
            momentum = 1.0 if step == 0 else 0.75
            z = ops.perturb(x_clean, x + eta.view(rows) * self._direction(grad) - x_clean, self.eps, self.norm)
            x_next = ops.perturb(x_clean, x + momentum * (z - x) + (1 - momentum) * (x - x_prev) - x_clean,
                                 self.eps, self.norm)
            x_prev, x = x, x_next
            logits, loss, grad = self._loss_and_grad(x, y, target)
            rises += (loss > loss_prev).float()
            loss_prev = loss
            better = loss > best_loss
            best_loss = torch.where(better, loss, best_loss)
            x_best = torch.where(better.view(rows), x, x_best)
            grad_best = torch.where(better.view(rows), grad, grad_best)
            since_check += 1
        higher = best_loss > kept[todo]
        out[todo[higher]] = x_best[higher]
        kept[todo[higher]] = best_loss[higher]

    def _attack(self, x, y):
        out, found = x.clone(), torch.zeros(len(y), dtype=torch.bool, device=x.device)
        kept = torch.full((len(y),), float("-inf"), device=x.device)
        with torch.no_grad():
            clean_logits = self.model(x).float()
        found |= clean_logits.argmax(1) != y  # already wrong: nothing to attack
        if self.targets and clean_logits.shape[1] < 4:
            raise ValueError(f"APGD-T's targeted DLR loss needs >= 4 classes, the model has {clean_logits.shape[1]}")
        ranked = clean_logits.argsort(dim=1, descending=True)
        for target_rank in range(1, self.targets + 1) if self.targets else (None,):
            target = None
            if target_rank is not None:
                if target_rank >= clean_logits.shape[1]:
                    break
                # the target_rank-th most likely class other than y
                others = ranked[ranked != y[:, None]].view(len(y), -1)
                target = others[:, target_rank - 1]
            for _ in range(self.restarts):
                todo = torch.nonzero(~found).squeeze(1)
                if todo.numel() == 0:
                    return out
                self._run(x, y, target, found, out, kept, todo)
        return out


__all__ = ["APGD", "checkpoints", "dlr_loss", "targeted_dlr_loss"]
