"""`gatfast report`: one report over a sweep's cells (gatfast.evaluation.sweep runs them):
every cell's eval.json and summary.json read back, mean ± std over seeds per (dataset,
variant), the cost of each by the timing pass (or as run), where each lies against the
PGD-AT frontier (gatfast.evaluation.frontier), written as report.md, report.json and the
plots. It reads only the small records a sweep folder keeps, never a checkpoint, so it
runs on any copy of the folder.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from gatfast import train
from gatfast.evaluation import frontier, plots, provenance, sweep, variants
from gatfast.train import cost, runs


def _mean_std(values):
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _fmt(values, scale=100.0, digits=1):
    mean, std = _mean_std(values)
    if mean is None:
        return "-"
    return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}"


def collect(out) -> dict:
    """Every cell's eval.json and summary.json under a sweep folder, and which are missing."""
    out = Path(out)
    spec_path = out / "sweep.json"
    if not spec_path.is_file():
        raise train.ConfigError(f"{out} is not a sweep folder (no sweep.json): run gatfast sweep first")
    spec = json.loads(spec_path.read_text())
    cells, missing = {}, []
    for d in spec["datasets"]:
        for m in spec["methods"]:
            for s in spec["seeds"]:
                folder = sweep.cell_dir(out, d, m, s)
                ev, summ = folder / "eval.json", folder / "summary.json"
                if not ev.is_file():
                    missing.append({"dataset": d, "method": m, "seed": s,
                                    "state": "evaluation missing" if summ.is_file() else
                                    ("training unfinished" if (folder / train.CHECKPOINT).is_file() else "not started")})
                    continue
                summary = json.loads(summ.read_text()) if summ.is_file() else {}
                cells[(d, m, s)] = {"eval": json.loads(ev.read_text()), "wall_s": summary.get("train_wall_s"),
                                    "flops": _flops(folder, summary), "epochs": summary.get("epochs_done"),
                                    "machine": _machine(folder)}
    return {"spec": spec, "cells": cells, "missing": missing}


def _machine(folder: Path) -> str | None:
    """What the cell trained on: the GPU's name, or the CPU's model and threads."""
    try:
        env = json.loads((folder / "config.json").read_text()).get("environment", {})
    except (OSError, ValueError):
        return None
    return provenance.machine(env) if env.get("gpu") or env.get("cpu_model") else None


def _flops(folder: Path, summary: dict) -> float | None:
    """The cell's training FLOPs: from summary.json (None where the count failed, its reason
    beside it), or counted from config.json for a run trained before gatfast counted them."""
    if "train_flops" in summary or not summary:
        return summary.get("train_flops")
    try:
        return cost.training_flops(train.load_config(folder))["total"]
    except (RuntimeError, TypeError, ValueError):
        return None  # the report shows "-" for its cost


def write(out) -> dict:
    """Writes OUT/report.md, OUT/report.json and PNG plots; returns the report."""
    out = Path(out)
    found = collect(out)
    spec, cells = found["spec"], found["cells"]
    timing = sweep.load_timing(out)
    rows = []
    for d in spec["datasets"]:
        for m in spec["methods"]:
            seeds = sorted(s for (cd, cm, s) in cells if cd == d and cm == m)
            if seeds:
                rows.append(_row(d, m, seeds, [cells[(d, m, s)] for s in seeds], timing))
    folders = [sweep.cell_dir(out, d, m, s) for d in spec["datasets"] for m in spec["methods"] for s in spec["seeds"]]
    result = {"rows": rows, "missing": found["missing"], "spec": spec,
              "wall_time": _wall_basis(timing, rows), "provenance": provenance.collect(spec, folders, timing),
              "frontier": {d: frontier.verdicts([r for r in rows if r["dataset"] == d]) for d in spec["datasets"]}}
    runs.write_json(out / "report.json", result)
    _plots(rows, out)
    runs.write_text(out / "report.md", _markdown(rows, found["missing"], spec, result["frontier"],
                                                 result["wall_time"], result["provenance"]))
    return result


def _row(dataset: str, method: str, seeds: list, group: list, timing) -> dict:
    """One (dataset, variant) over its seeds' cells: every figure as a list, a value per seed."""
    evals = [c["eval"] for c in group]
    with_aa = [e["autoattack"] for e in evals if e.get("autoattack")]
    with_cert = [e["certified"] for e in evals if (e.get("certified") or {}).get("accuracy") is not None]
    with_worst = [e["worst_case"] for e in evals if e["worst_case"]]
    eps_curve = {}  # PGD accuracy per eps, a value per seed
    for e in evals:
        for p in e["sweep"]:
            eps_curve.setdefault(p["eps"], []).append(p["accuracy"])
    return {
        "dataset": dataset, "method": method, "seeds": seeds, "eps": evals[0]["eps"],
        "clean": [e["clean"] for e in evals],
        "clean_images": [e["n"] for e in evals],
        "attacks": _suite_attacks(evals),
        "autoattack": [a["accuracy"] for a in with_aa],
        "autoattack_images": [a["n"] for a in with_aa],
        # the worst case runs on the first n_slow images: its own clean accuracy is beside it
        "worst_case": [w["accuracy"] for w in with_worst],
        "worst_case_clean": [w["clean"] for w in with_worst],
        "worst_case_images": [w["n"] for w in with_worst],
        "certified": [c["accuracy"] for c in with_cert],
        "certified_images": [c["n"] for c in with_cert],
        # the cost axis: the timing pass's seconds where the sweep was timed, else as run
        "wall_s": _walls(timing, dataset, method, group),
        "wall_s_as_run": [c["wall_s"] for c in group if c["wall_s"] is not None],
        "machines": sorted({c["machine"] for c in group if c["machine"]}),
        "flops": [c["flops"] for c in group if c["flops"] is not None],
        "sweep": dict(sorted(eps_curve.items())),
        "failed_checks": sorted({ch["name"] for e in evals for ch in e["checks"] if ch["passed"] is False}),
    }


def _suite_attacks(evals: list) -> dict:
    """The suite's own attacks' accuracies per seed (AutoAttack's cascade and the checks'
    attacks count in the AutoAttack and worst-case columns, not as rows of their own)."""
    attacks = {}
    for e in evals:
        for key, r in e["attacks"].items():
            if r.get("role", "suite") == "suite":
                row = attacks.setdefault(key, {"name": r["name"], "values": [], "images": []})
                row["values"].append(r["accuracy"])
                row["images"].append(r["n"])
    return attacks


def _walls(timing, dataset, method, group) -> list[float]:
    if timing and f"{dataset}/{variants.parse(method).timed}" in timing["cells"]:
        walls = [sweep.timed_wall(timing, dataset, method, c["epochs"]) for c in group]
    else:
        walls = [c["wall_s"] for c in group]
    return [w for w in walls if w is not None]


def _wall_basis(timing, rows) -> str:
    """One sentence: where the report's wall times come from."""
    machines = sorted({m for r in rows for m in r["machines"]})
    trained = f"the cells trained on {'; '.join(machines) or 'machines not recorded'}"
    if timing:
        where = provenance.machine(timing["environment"])
        return (f"Wall times are the timing pass's ({where}, {timing['date']}): every variant's steps timed in "
                f"turns on that one machine ({timing['rounds']} rounds of {timing['steps']} steps, the median), "
                f"scaled to the epochs each cell trained; each cell's own wall time, as run, is beside it "
                f"({trained}).")
    return (f"Wall times are each cell's own, as run ({trained}): they compare methods only where the cells "
            "trained on one machine.")


def _markdown(rows, missing, spec, verdicts=None, wall_basis=None, prov=None) -> str:
    lines = ["# gatfast sweep report", "",
             f"Datasets {', '.join(spec['datasets'])}; methods {', '.join(spec['methods'])}; "
             f"seeds {', '.join(map(str, spec['seeds']))}. Accuracies in % on each dataset's test split, "
             "mean ± std over the seeds that finished; clean accuracy beside every robust one. The worst case "
             "(the headline) is per image over every attack of the threat model, AutoAttack's and the sanity "
             "checks' included, so it runs on the images every attack saw (the first n_slow): its column "
             "has the clean accuracy on those images beside it. Each column's header says on how many "
             "test images it ran." + (f" {wall_basis}" if wall_basis else ""), ""]
    for d in spec["datasets"]:
        group = [r for r in rows if r["dataset"] == d]
        if not group:
            continue
        keys = []
        for r in group:
            keys += [k for k in r["attacks"] if k not in keys]
        names = {k: next(r["attacks"][k]["name"] for r in group if k in r["attacks"]) for k in keys}
        images = {k: [n for r in group if k in r["attacks"] for n in r["attacks"][k]["images"]] for k in keys}
        aa_images = [n for r in group for n in r["autoattack_images"]]
        worst_images = [n for r in group for n in r["worst_case_images"]]
        clean_images = [n for r in group for n in r["clean_images"]]
        cert_images = [n for r in group for n in r.get("certified_images", [])]
        lines += [f"## {d} (eps {group[0]['eps']:g})", "",
                  f"| method | seeds | clean ({_images(clean_images)}) | " +
                  " | ".join(f"{names[k]} ({_images(images[k])})" for k in keys) +
                  f" | AutoAttack ({_images(aa_images)}) | clean ({_images(worst_images)}) "
                  f"| worst case ({_images(worst_images)}) | certified, a lower bound ({_images(cert_images)}) "
                  f"| train time (s) | train time as run (s) | failed checks |",
                  "|---" * (10 + len(keys)) + "|"]
        for r in group:
            cols = [_fmt(r["attacks"][k]["values"]) if k in r["attacks"] else "-" for k in keys]
            lines.append(f"| {r['method']} | {len(r['seeds'])} | {_fmt(r['clean'])} | " + " | ".join(cols) +
                         f" | {_fmt(r['autoattack'])} | {_fmt(r['worst_case_clean'])} | {_fmt(r['worst_case'])} "
                         f"| {_fmt(r.get('certified', []))} | {_fmt(r['wall_s'], 1.0, 0)} | "
                         f"{_fmt(r.get('wall_s_as_run', r['wall_s']), 1.0, 0)} | "
                         f"{', '.join(r['failed_checks']) or 'none'} |")
        lines.append("")
        lines += _frontier_markdown(group, (verdicts or {}).get(d, []))
    if missing:
        lines += ["## Missing cells", ""]
        lines += [f"- {m['dataset']} / {m['method']} / seed {m['seed']}: {m['state']}" for m in missing]
        lines.append("")
    if prov:
        lines += provenance.markdown(prov)
    lines += ["Plots: robust_vs_cost.png (the frontier), robust_vs_eps.png, clean_vs_robust.png, train_time.png.", ""]
    return "\n".join(lines)


def _frontier_markdown(group, verdicts) -> list[str]:
    """The cost table, the study's summary (the README quotes it): every variant's clean,
    PGD, AutoAttack, worst-case and certified accuracy against its two costs, and where the
    ones outside PGD-AT lie against its frontier (gatfast.evaluation.frontier)."""
    costed = [(p, r) for r in group if (p := frontier.point(r)) is not None]
    if not costed:
        return []
    pgd = next((r["attacks"]["pgd"]["name"] for r in group if "pgd" in r["attacks"]), "PGD")
    by_label = {v["label"]: v for v in verdicts}
    lines = ["### Robustness per training cost", "",
             "Worst-case robust accuracy against training cost, mean ± std over seeds, with the clean, "
             f"{pgd}, AutoAttack and certified accuracy beside it. The PGD-AT frontier is the Pareto front "
             "of the fgsm_rs and pgd_at variants (a run that one costing no more matches in robustness is "
             "off it); each other variant's margin is its worst case minus the frontier's at its own cost "
             "(interpolated between the frontier's runs around it).", "",
             f"| method | seeds | clean | {pgd} | AutoAttack | worst case | certified | wall time (s) | "
             "training FLOPs | vs frontier, wall time | vs frontier, FLOPs |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for p, r in sorted(costed, key=lambda pr: pr[0]["flops"] if pr[0]["flops"] is not None else float("inf")):
        v = by_label.get(p["label"])
        cols = [_verdict_cell(v[c]) if v else "frontier" for c in frontier.COSTS]
        pgd_values = r["attacks"]["pgd"]["values"] if "pgd" in r["attacks"] else []
        lines.append(f"| {p['label']} | {len(r['seeds'])} | {_fmt(r['clean'])} | {_fmt(pgd_values)} | "
                     f"{_fmt(r['autoattack'])} | **{_fmt(r['worst_case'])}** | {_fmt(r.get('certified', []))} | "
                     f"{_cost(p, 'wall_s', '{:.0f}')} | {_cost(p, 'flops', '{:.3g}')} | {cols[0]} | {cols[1]} |")
    return lines + [""]


def _cost(p, key, form):
    if p[key] is None:
        return "-"
    return form.format(p[key]) + " ± " + form.format(p[key + "_std"])


def _verdict_cell(v) -> str:
    if v["margin"] is None:
        return v["verdict"]
    return f"{100 * v['margin']:+.1f} points: {v['verdict']}"


def _images(counts) -> str:
    """How many test images a column ran on: "1000 images", the range where the seeds
    differ, or "not run"."""
    if not counts:
        return "not run"
    lo, hi = min(counts), max(counts)
    return f"{lo} images" if lo == hi else f"{lo}-{hi} images"


def _plots(rows, out: Path):
    if not rows:
        return
    curves, errors = {}, {}
    for r in rows:
        label = f"{r['dataset']} / {r['method']}"
        curves[label] = [{"eps": e, "accuracy": statistics.fmean(v)} for e, v in r["sweep"].items()]
        errors[label] = [_mean_std(v)[1] for v in r["sweep"].values()]
    plots.robustness_vs_eps(curves, out / "robust_vs_eps.png", title="PGD accuracy over eps (mean ± std over seeds)",
                            errors=errors)
    points = {}
    for r in rows:
        robust = r["worst_case"] or next(iter(r["attacks"].values()), {"values": []})["values"]
        if not robust:
            continue
        (cm, cs), (rm, rs) = _mean_std(r["clean"]), _mean_std(robust)
        points[f"{r['dataset']} / {r['method']}"] = (100 * cm, 100 * rm, 100 * cs, 100 * rs)
    if points:
        plots.scatter(points, out / "clean_vs_robust.png", title="clean against robust accuracy (worst case)",
                      xlabel="clean accuracy (%)", ylabel="robust accuracy (%)")
    for d in {r["dataset"] for r in rows}:
        costed = [p for p in map(frontier.point, [r for r in rows if r["dataset"] == d]) if p is not None]
        if costed:
            plots.frontier(costed, out / ("robust_vs_cost.png" if len({r["dataset"] for r in rows}) == 1
                                          else f"robust_vs_cost-{d}.png"),
                           title=f"{d}: worst-case robust accuracy per training cost (mean ± std over seeds)",
                           family=frontier.FAMILY, fronts=frontier.fronts(costed), costs=frontier.COSTS,
                           subject=frontier.SUBJECT)
    times = {f"{r['dataset']} / {r['method']}": _mean_std(r["wall_s"]) for r in rows if r["wall_s"]}
    if times:
        plots.bars(times, out / "train_time.png", title="training wall time", ylabel="seconds")
