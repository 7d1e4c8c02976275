"""`gatfast study`: the headline study as one command, a sweep preset that resumes where it
stopped. Every defence a user could pick for a budget, on the same engine, data, model,
optimiser and schedule, three seeds each, evaluated with the whole suite (AutoAttack and
the per-image worst case included) on the whole test split, then reported with the
frontier of robustness per training cost (gatfast.evaluation.frontier). Its wall-time
axis comes from one timing pass on one machine (OUT/timing.json, gatfast.train.cost.
training_seconds) at its start, so that cells trained on different machines, as a study
that outlives one machine's life is, still compare; the FLOPs axis holds anywhere.

The headline cells (standard, fgsm_rs, pgd_at, trades, gat) train and are evaluated first,
so a study stopped early still answers the main question; the other PGD-AT step counts,
the other GAT recipes, GAT given PGD-10 AT's wall time, and the certified baseline follow.
"""

from __future__ import annotations

from gatfast.evaluation import suite, sweep
from gatfast.train import data

# the cheap cells and GAT (the subject) first, the costliest (PGD-10 AT, TRADES) last, so
# that a study stopped early has the most cells that answer something
HEADLINE = ("standard", "gat", "fgsm_rs", "pgd_at", "trades")
VARIANTS = HEADLINE + (
    "pgd_at:attack_steps=2", "pgd_at:attack_steps=3", "pgd_at:attack_steps=5",   # the frontier's other points
    "gat:recipe=paper", "gat:recipe=l2l",                                        # gat is the l2l-3 recipe
    "gat:match=pgd_at",                                                          # GAT with PGD-10's wall time
    "crown_ibp:model=cert_cnn:epochs=60",                                        # the certified baseline
)


# eps per dataset: the 0.3 on mnist5k; 0.1 on the 8x8 digits, as their sweep of
# 2026-11-27 (README), where 0.3 leaves little of a digit.
EPS = {"mnist5k": 0.3, "digits": 0.1}


def spec(datasets=("mnist5k", "digits"), seeds=(0, 1, 2), eps: dict | None = None, epochs: int = 20,
         methods: tuple = VARIANTS) -> sweep.SweepSpec:
    """The study's sweep: every variant on every dataset and seed, the suite on all test images
    (eps None: EPS, 0.3 for a dataset it does not name)."""
    sweep.check_datasets(datasets)
    eps = eps or {d: EPS.get(d, 0.3) for d in datasets}
    test_images = max(len(data.load_dataset(d).test) for d in datasets)
    evaluation = suite.EvalConfig(n=test_images, n_slow=test_images)  # every attack on the whole split
    return sweep.SweepSpec(datasets=tuple(datasets), methods=tuple(methods), seeds=tuple(seeds), eps=eps,
                           train_options={"epochs": epochs}, eval_config=evaluation,
                           first=tuple(m for m in HEADLINE if m in methods), timed=True)


def plan(spec: sweep.SweepSpec, evaluate: bool = True) -> list[str]:
    """The cells in the order the study runs them, one line each, under their stage."""
    lines = []
    names = ("headline", "the rest") if spec.first else ("every cell",)
    done = "each method's seeds trained, then evaluated" if evaluate else "trained (--train-only)"
    groups = spec.groups()
    for number, (stage, cells) in enumerate(zip(names, spec.stages()), 1):
        lines.append(f"stage {number} ({stage}): {len(cells)} cells, {done}")
        for group in groups:
            if group[0] in cells:
                lines.extend(f"  {d} {m} seed {s}" for d, m, s in group)
    return lines
