"""Tabulate the digits GAT screening (run.sh): per variant, the proxy worst case of each
seed, its mean and standard deviation, clean accuracy and training FLOPs, as markdown.
usage: python summary.py [RUNS]   (default: this folder, the runs' records)"""

import json
import statistics
import sys
from pathlib import Path


def cell(seed_dir: Path) -> dict | None:
    """One seed's worst case, clean accuracy and FLOPs, or None if it has not finished."""
    try:
        worst = json.loads((seed_dir / "eval.json").read_text())["worst_case"]
        flops = json.loads((seed_dir / "summary.json").read_text())["train_flops"]
    except (OSError, KeyError, ValueError):
        return None
    return {"worst": 100 * worst["accuracy"], "clean": 100 * worst["clean"], "flops": flops}


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1f} ± {std:.1f}"


def main(runs: Path) -> None:
    print("| variant | seeds | worst case per seed | worst case | clean | training FLOPs |")
    print("|---|---|---|---|---|---|")
    for variant in sorted(p for p in runs.iterdir() if p.is_dir()):
        found = [(s.name.removeprefix("seed"), cell(s)) for s in sorted(variant.glob("seed*"))]
        cells = [c for _, c in found if c]
        if not cells:
            continue
        per_seed = ", ".join(f"{seed}: {c['worst']:.1f}" for seed, c in found if c)
        print(f"| `{variant.name}` | {len(cells)} | {per_seed} | {mean_std([c['worst'] for c in cells])} | "
              f"{mean_std([c['clean'] for c in cells])} | {statistics.mean(c['flops'] for c in cells):.2e} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
