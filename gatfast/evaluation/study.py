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

import json
import statistics
from pathlib import Path

from gatfast import train
from gatfast.evaluation import provenance, suite, sweep, variants
from gatfast.train import data

# the cheap cells and GAT (the subject) first, the costliest (PGD-10 AT, TRADES) last, so
# that a study stopped early has the most cells that answer something
HEADLINE = ("standard", "gat", "fgsm_rs", "pgd_at", "trades")
VARIANTS = HEADLINE + (
    "pgd_at:attack_steps=2", "pgd_at:attack_steps=3", "pgd_at:attack_steps=5",   # the frontier's other points
    "gat:recipe=paper", "gat:recipe=l2l",                                        # gat is the l2l-3 recipe
    "gat:match=pgd_at",                                                          # GAT with PGD-10's wall time
    "gat:generator_lr=0.001",                                                    # gat's default until 2026-12-07
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


def plan(spec: sweep.SweepSpec, evaluate: bool = True, out=None) -> list[str]:
    """The cells in the order the study runs them, one line each, under their stage; with
    `out` (a study begun), each cell's state and what it still costs, and the total to go."""
    lines = []
    names = ("headline", "the rest") if spec.first else ("every cell",)
    done = "each method's seeds trained, then evaluated" if evaluate else "trained (--train-only)"
    costs = budget(spec, out, evaluate) if out is not None else {}
    groups = spec.groups()
    for number, (stage, cells) in enumerate(zip(names, spec.stages()), 1):
        lines.append(f"stage {number} ({stage}): {len(cells)} cells, {done}")
        for group in groups:
            if group[0] in cells:
                lines.extend(f"  {d} {m} seed {s}" + (f": {_said(costs[(d, m, s)])}" if costs else "")
                             for d, m, s in group)
    if costs:
        lines.append(_total(costs, sweep.load_timing(out)))
    return lines


ROBUST = 0.2  # a worst case above this makes an evaluated cell a guide to the defences not yet evaluated


def budget(spec: sweep.SweepSpec, out, evaluate: bool = True) -> dict:
    """Per cell: {"state", "train_s", "eval_s"}, the seconds it still needs on this study's
    machine, None where there is nothing to estimate from yet. Training from the timing
    pass (OUT/timing.json; a match variant trains as long as the cell it matches);
    evaluation from the cells already evaluated (their attacks' seconds): the same
    variant's where one is, else the dataset's robust cells' (worst case above ROBUST),
    as every variant of the study but `standard` is a defence."""
    out = Path(out)
    timing = sweep.load_timing(out)
    evaluated = {}
    for d, m, s in spec.cells():
        report = sweep.cell_dir(out, d, m, s) / "eval.json"
        if report.is_file():
            evaluated[(d, m, s)] = json.loads(report.read_text())
    costs = {}
    for d, m, s in spec.cells():
        folder = sweep.cell_dir(out, d, m, s)
        if (d, m, s) in evaluated:
            costs[(d, m, s)] = {"state": "evaluated", "train_s": 0.0, "eval_s": 0.0}
            continue
        trained = (folder / "summary.json").is_file() and (folder / train.CHECKPOINT).is_file()
        costs[(d, m, s)] = {"state": "trained" if trained else "to do",
                            "train_s": 0.0 if trained else _train_seconds(spec, timing, d, m),
                            "eval_s": _eval_seconds(evaluated, d, m) if evaluate else 0.0}
    return costs


def _train_seconds(spec, timing, dataset, method) -> float | None:
    variant = variants.parse(method)
    timed = variant.match or method  # a match variant trains for the wall time of the cell it matches
    return sweep.timed_wall(timing, dataset, timed, sweep.cell_config(spec, dataset, timed, 0).epochs)


def _eval_seconds(evaluated: dict, dataset: str, method: str) -> float | None:
    own = [_seconds(e) for (d, m, _), e in evaluated.items() if (d, m) == (dataset, method)]
    robust = [_seconds(e) for (d, _, _), e in evaluated.items()
              if d == dataset and (e.get("worst_case") or {}).get("accuracy", 0.0) > ROBUST]
    guide = own or robust
    return statistics.fmean(guide) if guide else None


def _seconds(report: dict) -> float:
    """An evaluation's seconds: its attacks' and its certified bound's."""
    return sum(a.get("seconds") or 0.0 for a in report["attacks"].values()) + \
        ((report.get("certified") or {}).get("seconds") or 0.0)


def _said(cost: dict) -> str:
    if cost["state"] == "evaluated":
        return "evaluated"
    parts = [f"{what} {_duration(cost[key])}" for what, key in (("train", "train_s"), ("evaluate", "eval_s"))
             if cost[key] != 0.0]
    return cost["state"] + (f" ({', '.join(parts)})" if parts else "")


def _total(costs: dict, timing: dict | None) -> str:
    left = [c for c in costs.values() if c["state"] != "evaluated"]
    if not left:
        return "every cell is evaluated: nothing to go"
    train_s = sum(c["train_s"] or 0.0 for c in left)
    eval_s = sum(c["eval_s"] or 0.0 for c in left)
    unknown = sum(c["train_s"] is None or c["eval_s"] is None for c in left)
    where = "" if timing is None else \
        f" (the timing pass: {provenance.machine(timing['environment'])}, {timing['date']})"
    return (f"to go: {len(left)} of {len(costs)} cells, about {_duration(train_s)} of training{where} and "
            f"{_duration(eval_s)} of evaluation (as the cells evaluated so far took)"
            + (f"; {unknown} cells have no estimate yet (no timing pass, or no cell of theirs or robust one "
               "evaluated)" if unknown else ""))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
