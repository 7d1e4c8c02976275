"""Attacks gatfast takes from torchattacks (pinned: 3.5.1) rather than rewriting:
AutoAttack (standard: APGD-CE, APGD-T, FAB-T, Square; Croce and Hein, 2020) and Square
(a score-based black-box attack: it reads the model's outputs, never its gradients)."""

from __future__ import annotations

from gatfast import _checks
from gatfast.attacks.base import Attack

TORCHATTACKS_VERSION = "3.5.1"
VERSIONS = ("standard", "plus", "rand")


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


class AutoAttack(Attack):
    """torchattacks.AutoAttack with its own flags (version, seed); n_classes from the model."""

    name = "AutoAttack"

    def __init__(self, model, *, eps: float, norm: str = "linf", n_classes: int = 10, version: str = "standard",
                 seed: int = 0, batch_size: int = 500, progress: bool = False):
        super().__init__(model, eps=eps, norm=norm, batch_size=batch_size, progress=progress)
        if version not in VERSIONS:
            raise ValueError(f"version must be one of {', '.join(VERSIONS)}, got {version!r}")
        self.version, self.seed = version, int(seed)
        self.n_classes = _checks.count(n_classes, "n_classes", 2)
        self._attack_impl = _torchattacks().AutoAttack(model, norm=_norm_name(self.norm), eps=self.eps,
                                                      version=version, n_classes=self.n_classes, seed=self.seed)

    def describe(self):
        return (f"AutoAttack {self.version} (torchattacks {TORCHATTACKS_VERSION}: APGD-CE, APGD-T, FAB-T, Square; "
                f"{self.norm}, eps {self.eps:g}, white box + black box)")

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
        self.seed = int(seed)
        self._attack_impl = _torchattacks().Square(model, norm=_norm_name(self.norm), eps=self.eps,
                                                  n_queries=self.n_queries, n_restarts=self.restarts,
                                                  loss="margin", seed=self.seed)

    def describe(self):
        return (f"Square ({self.norm}, eps {self.eps:g}, {self.n_queries} queries, margin loss; "
                f"black box: scores only)")

    def _attack(self, x, y):
        return self._attack_impl(x, y)
