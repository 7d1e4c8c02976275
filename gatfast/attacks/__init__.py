"""Attacks on classifiers of [0, 1] images, each a class called as
`attack(images, labels) -> adversarial images` (like torchattacks):

- `FGSM`, `PGD` (linf / l2, steps, step size, random start, restarts, ce or margin
  loss, AMP): white box, on the fused `gatfast.pgd_step` (gradient.py);
- `CW`: Carlini-Wagner L2, accuracy at an L2 budget (cw.py);
- `APGD` (CE, DLR, and APGD-T: targeted DLR), Croce and Hein's step-size schedule (apgd.py);
- `AutoAttack`: standard (APGD-CE, APGD-T, FAB-T, Square in a cascade) with the
  published settings (autoattack.py); `FAB`, `Square`: through torchattacks (external.py);
- `Transfer`: PGD on a separately trained surrogate (transfer.py).

`pgd` (a function) is the training methods' plain PGD (last iterate, fixed step); it
never reports robustness: every reported PGD figure, summary.json's included, is `PGD`.
"""

from gatfast.attacks.base import Attack, correct, evaluating, frozen, margin_loss
from gatfast.attacks.cw import CW
from gatfast.attacks.apgd import APGD
from gatfast.attacks.autoattack import AutoAttack
from gatfast.attacks.external import FAB, Square
from gatfast.attacks.gradient import FGSM, PGD, pgd
from gatfast.attacks.transfer import Transfer
from gatfast.ops.ball import random_start

__all__ = ["APGD", "Attack", "AutoAttack", "CW", "FAB", "FGSM", "PGD", "Square", "Transfer", "correct", "evaluating",
           "frozen", "margin_loss", "pgd", "random_start"]
