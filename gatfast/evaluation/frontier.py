"""Robustness per unit of training cost: where each defence lies against the PGD-AT
frontier, the curve that PGD adversarial training traces as its steps grow (FGSM-RS is its
one-step end). A user asks which defence gives the most robustness for a budget; a
defence on or above that curve answers "this one", below it "PGD-AT with fewer steps".

A point is a variant's mean over seeds of its worst-case robust accuracy and of its cost,
by two measures: wall time (a timed sweep's timing pass, every variant on one machine; else
each cell's own, which compare only within one machine) and training FLOPs
(gatfast.train.cost), which hold on any hardware. The frontier is the Pareto front of the
PGD-AT runs: a run that a cheaper one matches in robustness is off it (a user with its
budget would pick the cheaper run), so the frontier never falls as cost grows. Its value at
a cost is the linear interpolation between the frontier's runs nearest below and above it;
past its costliest run it is that run's accuracy (past every PGD-AT run the verdict says
so: a costlier PGD-AT run might do better), and below the cheapest there is none (a point
cheaper than every PGD-AT run is "on or above" only if it beats the cheapest one).
"""

from __future__ import annotations

import statistics

from gatfast.evaluation import variants

FAMILY = ("fgsm_rs", "pgd_at")   # the methods whose runs trace the frontier
SUBJECT = "gat"                  # the variant the study asks about: GAT with gatfast's defaults
COSTS = {"wall_s": "wall time (s)", "flops": "training FLOPs"}


def point(row: dict) -> dict | None:
    """A report row's means and standard deviations over seeds (the worst case's and each
    cost's; the clean and certified accuracies' means, the latter None where not bounded),
    or None without a worst case."""
    robust = row["worst_case"]
    if not robust:
        return None
    certified = row.get("certified") or []
    out = {"label": row["method"], "method": variants.parse(row["method"]).method, "robust": _mean(robust),
           "robust_std": _std(robust), "clean": _mean(row["clean"]),
           "certified": _mean(certified) if certified else None}
    for cost in COSTS:
        values = [v for v in row.get(cost, []) if v is not None]
        out[cost], out[cost + "_std"] = (_mean(values), _std(values)) if values else (None, None)
    return out


def reference(frontier: list[dict], cost: str, at: float) -> float | None:
    """The frontier's robust accuracy at cost `at` (see the module's docstring)."""
    line = [(p[cost], p["robust"]) for p in pareto(frontier, cost)]
    if not line or at < line[0][0]:
        return None
    for (c0, r0), (c1, r1) in zip(line, line[1:]):
        if c0 <= at <= c1:
            return r0 if c1 == c0 else r0 + (r1 - r0) * (at - c0) / (c1 - c0)
    return line[-1][1]


def pareto(frontier: list[dict], cost: str) -> list[dict]:
    """The family's runs that no run as cheap or cheaper matches in robustness, in cost order:
    the frontier proper, rising with cost."""
    out = []
    for p in sorted((f for f in frontier if f[cost] is not None), key=lambda f: (f[cost], -f["robust"])):
        if not out or p["robust"] > out[-1]["robust"]:
            out.append(p)
    return out


def fronts(points: list[dict]) -> dict[str, list[dict]]:
    """Per cost, the family's points on the frontier (what a plot joins)."""
    family = [p for p in points if p["method"] in FAMILY]
    return {cost: pareto(family, cost) for cost in COSTS}


def verdicts(rows: list[dict]) -> list[dict]:
    """Per row of one dataset outside the family, its margin over the frontier by each cost;
    per family run off the frontier by either cost, the run that puts it off (a family run
    on it by both has no entry: the report calls it "frontier")."""
    points = [p for p in map(point, rows) if p is not None]
    frontier = [p for p in points if p["method"] in FAMILY]
    out = []
    for p in points:
        if p["method"] in FAMILY:
            entry = {cost: _family_verdict(p, frontier, cost) for cost in COSTS}
            if all(v["margin"] is None for v in entry.values()):
                continue
        else:
            entry = {cost: _verdict(p, frontier, cost) for cost in COSTS}
        out.append({"label": p["label"], "robust": p["robust"], **entry})
    return out


def _family_verdict(p: dict, frontier: list[dict], cost: str) -> dict:
    """A PGD-AT run on the frontier, or the cheaper run at least as robust that puts it off."""
    if p[cost] is None:
        return {"reference": None, "margin": None, "verdict": "not measured"}
    front = pareto(frontier, cost)
    if any(f is p for f in front):
        return {"reference": None, "margin": None, "verdict": "frontier"}
    better = next(f for f in front if f[cost] <= p[cost] and f["robust"] >= p["robust"])
    ref = reference(frontier, cost, p[cost])
    return {"reference": ref, "margin": p["robust"] - ref,
            "verdict": f"off the frontier: {better['label']} costs no more and is as robust"}


def _verdict(p: dict, frontier: list[dict], cost: str) -> dict:
    if p[cost] is None:
        return {"reference": None, "margin": None, "verdict": "not measured"}
    if not any(f[cost] is not None for f in frontier):  # a study under way: its PGD-AT cells still to come
        return {"reference": None, "margin": None, "verdict": "no PGD-AT run evaluated yet"}
    ref = reference(frontier, cost, p[cost])
    if ref is None:  # cheaper than every PGD-AT run
        cheapest = min((f for f in frontier if f[cost] is not None), key=lambda f: f[cost])
        above = p["robust"] >= cheapest["robust"]
        return {"reference": cheapest["robust"], "margin": p["robust"] - cheapest["robust"],
                "verdict": "on or above" if above else "undecided: cheaper than every PGD-AT run and less robust"}
    margin = p["robust"] - ref
    verdict = "on or above" if margin >= 0 else "below"
    if p[cost] > max(f[cost] for f in frontier if f[cost] is not None):
        # the frontier is flat past its costliest run: a costlier PGD-AT run, not yet run or
        # evaluated, might well be more robust, so the verdict says against what it stands
        verdict += ": costlier than every PGD-AT run"
    return {"reference": ref, "margin": margin, "verdict": verdict}


def _mean(values):
    return statistics.fmean(values)


def _std(values):
    return statistics.stdev(values) if len(values) > 1 else 0.0
