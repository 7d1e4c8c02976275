"""AutoAttack, standard version (Croce and Hein 2020): APGD-CE, APGD-T, FAB-T and Square
run in turn, each on the images the earlier ones left correctly classified, so an image
counts as robust only when all four fail on it.

gatfast builds the cascade itself, with the published settings: 100 steps for APGD-CE,
APGD-T (9 target classes) and FAB-T (9 target classes), 5,000 queries for Square.
torchattacks' `AutoAttack` wrapper (3.5.1) leaves its members at their default of 10
steps, which on gatfast's GAT mnist5k model overstates robust accuracy by about 5
points (README). APGD and APGD-T are gatfast's own (apgd.py: they drop a sample once it
is broken, and step with the fused ops); FAB and Square are torchattacks'.
"""

from __future__ import annotations

import time

import torch

from gatfast.ops import checks as _checks
from gatfast.attacks.apgd import APGD
from gatfast.attacks.base import Attack, check_batch, correct
from gatfast.attacks.external import FAB, Square

MEMBERS = ("apgd_ce", "apgd_t", "fab_t", "square")


def member(key: str, model, *, eps: float, norm: str, n_classes: int, seed: int = 0, steps: int = 100,
           square_queries: int = 5000, batch_size: int = 250, progress: bool = False) -> Attack:
    """One member of AutoAttack standard, with its published settings."""
    common = {"eps": eps, "norm": norm, "seed": seed, "batch_size": batch_size, "progress": progress}
    targets = min(9, n_classes - 1)
    if key == "apgd_ce":
        return APGD(model, steps=steps, loss="ce", **common)
    if key == "apgd_t":
        return APGD(model, steps=steps, loss="dlr", targets=targets, **common)
    if key == "fab_t":
        return FAB(model, steps=steps, targeted=True, n_classes=n_classes, **common)
    if key == "square":
        return Square(model, n_queries=square_queries, **common)
    raise ValueError(f"AutoAttack has no member {key!r}; its members are {', '.join(MEMBERS)}")


def attack_standing(attack: Attack, images: torch.Tensor, labels: torch.Tensor, standing: torch.Tensor):
    """One step of the cascade: `attack` on the images still standing (a bool mask), its
    output checked with a fresh forward. Returns (indices attacked, survived per attacked
    image, their adversarial images)."""
    todo = torch.nonzero(standing).squeeze(1)
    if todo.numel() == 0:
        return todo, torch.zeros(0, dtype=torch.bool, device=labels.device), images[todo]
    adv = attack(images[todo], labels[todo])
    return todo, correct(attack.model, adv, labels[todo], attack.batch_size), adv


class AutoAttack(Attack):
    """AutoAttack standard as one attack: `attack(images, labels)` returns, per image, the
    first member's successful example, or the last member's output where all failed.
    After a call, `outcomes[key]` holds per image 1 (the member ran and the image stayed
    correct), 0 (it broke it, or the image was misclassified clean) or -1 (not run: an
    earlier member had broken it), and `seconds[key]` the member's wall time."""

    name = "AutoAttack"

    def __init__(self, model, *, eps: float, norm: str = "linf", n_classes: int = 10, steps: int = 100,
                 square_queries: int = 5000, seed: int = 0, batch_size: int = 250, progress: bool = False):
        super().__init__(model, eps=eps, norm=norm, batch_size=batch_size, progress=progress)
        self.n_classes = _checks.count(n_classes, "n_classes", 2)
        self.steps = _checks.count(steps, "steps")
        self.square_queries = _checks.count(square_queries, "square_queries")
        self.seed = _checks.seed(seed)
        self.members = {key: member(key, model, eps=self.eps, norm=self.norm, n_classes=self.n_classes,
                                    seed=self.seed, steps=self.steps, square_queries=self.square_queries,
                                    batch_size=self.batch_size)
                        for key in MEMBERS}
        self.outcomes: dict[str, torch.Tensor] = {}
        self.seconds: dict[str, float] = {}

    def describe(self):
        return ("AutoAttack standard (" + "; ".join(m.describe() for m in self.members.values()) +
                "; each on the images the earlier ones left standing)")

    def __call__(self, images, labels):
        images, labels = check_batch(images, labels)
        clean = correct(self.model, images, labels, self.batch_size)
        out = images.clone()
        standing = clean.clone()
        self.outcomes, self.seconds = {}, {}
        for key, attack in self.members.items():
            start = time.perf_counter()
            attack.progress = self.progress
            outcome = torch.full_like(labels, -1, dtype=torch.int8)
            outcome[~clean] = 0
            todo, survived, adv = attack_standing(attack, images, labels, standing)
            outcome[todo] = survived.to(torch.int8)
            out[todo] = adv
            standing[todo[~survived]] = False
            self.outcomes[key] = outcome
            self.seconds[key] = time.perf_counter() - start
        return out


__all__ = ["AutoAttack", "MEMBERS", "attack_standing", "member"]
