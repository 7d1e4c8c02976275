"""PNG plots for eval and report (matplotlib, no display needed). Each is written to a
temporary file and renamed, like every other artifact of a run."""

from __future__ import annotations

import os
from pathlib import Path


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path):
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    os.replace(tmp, path)


def robustness_vs_eps(curves: dict[str, list[dict]], path, *, title: str, trained_eps: float | None = None,
                      errors: dict[str, list[float]] | None = None):
    """Accuracy against eps, one line per label: curves[label] = [{"eps", "accuracy"}, ...]."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, points in curves.items():
        eps = [p["eps"] for p in points]
        acc = [100 * p["accuracy"] for p in points]
        err = [100 * e for e in errors[label]] if errors and label in errors else None
        ax.errorbar(eps, acc, yerr=err, marker="o", capsize=3, label=label)
    if trained_eps is not None:
        ax.axvline(trained_eps, color="grey", linestyle=":", label=f"trained eps {trained_eps:g}")
    ax.set_xlabel("eps")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)


def scatter(points: dict[str, tuple], path, *, title: str, xlabel: str, ylabel: str):
    """One labelled point per key: points[label] = (x, y, x_err, y_err)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, (x, y, xe, ye) in points.items():
        ax.errorbar([x], [y], xerr=[xe], yerr=[ye], marker="o", capsize=3, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)


def bars(values: dict[str, tuple], path, *, title: str, ylabel: str):
    """One bar per key: values[label] = (mean, std)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(values)), 4))
    labels = list(values)
    ax.bar(range(len(labels)), [values[k][0] for k in labels], yerr=[values[k][1] for k in labels], capsize=3)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)
    plt.close(fig)


def frontier(points: list[dict], path, *, title: str, family: tuple, fronts: dict, costs: dict,
             subject: str | None = None):
    """Robust accuracy against each cost (one column per cost, FLOPs on a log scale), with
    seed error bars both ways, the family's points as squares and fronts[cost], the ones on
    its frontier in cost order, joined and on flat to the family's costliest point;
    below each, on the same cost axis and in the same colours, the clean accuracy (hollow)
    and, where the variant was bounded, the certified accuracy (a cross: the lower bound
    where the worst case is an upper one). Apart, so the frontier keeps its resolution.
    The `subject` label, the one the plot asks about, is a large black-edged star, so that
    a reader finds it among a dozen variants at a glance."""
    plt = _pyplot()
    from matplotlib import ticker
    fig, axes = plt.subplots(2, len(costs), figsize=(6 * len(costs), 7), squeeze=False, sharex="col",
                             gridspec_kw={"height_ratios": [3, 2]})
    # a colour per variant, the same in both columns: a study has more than the default
    # cycle's ten
    palette = plt.get_cmap("tab10" if len(points) <= 10 else "tab20")
    colors = {p["label"]: palette(i % palette.N) for i, p in enumerate(points)}
    for column, (key, name) in enumerate(costs.items()):
        top, bottom = axes[0][column], axes[1][column]
        shown = [p for p in points if p[key] is not None]
        line = [(p[key], p["robust"]) for p in fronts[key]]  # frontier.pareto's order: by cost
        costliest = max((p[key] for p in shown if p["method"] in family), default=None)
        if line and costliest > line[-1][0]:
            line.append((costliest, line[-1][1]))  # flat past its best run, to the costliest run measured
        if line:
            top.plot([c for c, _ in line], [100 * r for _, r in line], color="grey", linestyle="--",
                     label="PGD-AT frontier")
        for p in shown:
            marker = "*" if p["label"] == subject else "s" if p["method"] in family else "o"
            color = colors[p["label"]]
            emphasis = dict(markersize=15, markeredgecolor="black", zorder=3) if p["label"] == subject else {}
            top.errorbar([p[key]], [100 * p["robust"]], xerr=[p[key + "_std"]], yerr=[100 * p["robust_std"]],
                         marker=marker, capsize=3, linestyle="none", label=p["label"], color=color, **emphasis)
            bottom.plot([p[key]], [100 * p["clean"]], marker=marker, markerfacecolor="none", color=color,
                        linestyle="none")
            if p.get("certified") is not None:
                bottom.plot([p[key]], [100 * p["certified"]], marker="x", color=color, linestyle="none")
        if key == "flops":
            top.set_xscale("log")
            # labels at 1, 2 and 5 of each decade, none between: a study spans about a decade,
            # where the default labels only the decade or lets minor labels collide
            top.xaxis.set_major_locator(ticker.LogLocator(subs=(1, 2, 5)))
            top.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:.0e}".replace("e+", "e")))
            top.xaxis.set_minor_formatter(ticker.NullFormatter())
        top.set_ylabel("worst-case robust accuracy (%)")
        bottom.set_ylim(-3, 103)
        bottom.set_ylabel("clean (hollow), certified (x) (%)")
        bottom.set_xlabel(name)
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(title, fontsize=10)
    _save(fig, path)
    plt.close(fig)
