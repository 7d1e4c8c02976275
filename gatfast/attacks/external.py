"""Attacks gatfast takes from torchattacks (pinned: 3.5.1) rather than rewriting: FAB
(Croce and Hein 2020), and Square (Andriushchenko et al. 2020, a score-based black-box
attack: it reads the model's outputs, never its gradients). Both are members of
AutoAttack (autoattack.py), with AutoAttack's settings as defaults."""

from __future__ import annotations

from gatfast.ops import checks as _checks
from gatfast.attacks.base import Attack

TORCHATTACKS_VERSION = "3.5.1"


def _torchattacks():
    try:
        import torchattacks
    except ImportError as e:
        raise ImportError(f"this attack runs through torchattacks: pip install --no-deps "
                          f"torchattacks=={TORCHATTACKS_VERSION} (its metadata pins an old requests "
                          f"it never imports)") from e
    return torchattacks


def _norm_name(norm: str) -> str:
    return "Linf" if norm == "linf" else "L2"


class FAB(Attack):
    """torchattacks.FAB (Croce and Hein 2020): the smallest perturbation found by stepping
    to the linearised decision boundary and back towards the clean image; an example
    counts when it lies within eps. `targeted=True` is AutoAttack's FAB-T: in turn
    against each of the `n_classes - 1` most likely wrong classes, on the samples still
    standing. AutoAttack's 100 steps by default (torchattacks' own default is 10)."""

    name = "FAB"

    def __init__(self, model, *, eps: float, norm: str = "linf", n_classes: int = 10, steps: int = 100,
                 targeted: bool = True, restarts: int = 1, seed: int = 0, batch_size: int = 250,
                 progress: bool = False):
        super().__init__(model, eps=eps, norm=norm, batch_size=batch_size, progress=progress)
        self.n_classes = _checks.count(n_classes, "n_classes", 2)
        self.steps = _checks.count(steps, "steps")
        self.restarts = _checks.count(restarts, "restarts")
        self.targeted, self.seed = bool(targeted), _checks.seed(seed)
        self.name = "FAB-T" if self.targeted else "FAB"
        self._attack_impl = _torchattacks().FAB(model, norm=_norm_name(self.norm), eps=self.eps, steps=self.steps,
                                               n_restarts=self.restarts, seed=self.seed,
                                               multi_targeted=self.targeted, n_classes=self.n_classes)

    def describe(self):
        what = f"against the {self.n_classes - 1} most likely wrong classes" if self.targeted else "untargeted"
        return (f"{self.name} (torchattacks {TORCHATTACKS_VERSION}; {self.norm}, eps {self.eps:g}, {self.steps} steps, "
                f"{what}, white box)")

    def _attack(self, x, y):
        return self._attack_impl(x, y)


class Square(Attack):
    """torchattacks.Square: random square-shaped updates accepted when the margin loss
    improves; `n_queries` model evaluations per sample at most."""

    name = "Square"
    white_box = False

    def __init__(self, model, *, eps: float, norm: str = "linf", n_queries: int = 5000, restarts: int = 1,
                 seed: int = 0, batch_size: int = 500, progress: bool = False):
        super().__init__(model, eps=eps, norm=norm, batch_size=batch_size, progress=progress)
        self.n_queries = _checks.count(n_queries, "n_queries")
        self.restarts = _checks.count(restarts, "restarts")
        self.seed = _checks.seed(seed)
        self._attack_impl = _torchattacks().Square(model, norm=_norm_name(self.norm), eps=self.eps,
                                                  n_queries=self.n_queries, n_restarts=self.restarts,
                                                  loss="margin", seed=self.seed)

    def describe(self):
        return (f"Square ({self.norm}, eps {self.eps:g}, {self.n_queries} queries, margin loss; "
                f"black box: scores only)")

    def _attack(self, x, y):
        return self._attack_impl(x, y)
