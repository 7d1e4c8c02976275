"""Where a sweep's figures come from: the commands that ran it, the software and the
machines that trained and evaluated its cells, and when. A study outlives the machines
it runs on, so its report says what each part ran on rather than assume one machine.

Read from the records a sweep folder keeps (and commits without its checkpoints):
sweep.json's `commands` (passed in, as the report has read it), each cell's config.json
(the training machine and versions) and eval.json (the evaluating machine and the date,
for cells evaluated since gatfast records them), and timing.json (the wall-time axis's
machine and date).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path


def collect(spec: dict, cells: list[Path], timing: dict | None) -> dict:
    """The provenance of the sweep whose sweep.json is `spec` and cell folders are `cells`."""
    trained, evaluated, software, dates = Counter(), Counter(), Counter(), []
    for folder in cells:
        env = (_read(folder / "config.json") or {}).get("environment")
        if env:
            trained[machine(env)] += 1
            software[_software(env)] += 1
        report = _read(folder / "eval.json")
        if report is None:
            continue
        evaluated[machine(report["environment"]) if report.get("environment") else "not recorded"] += 1
        if report.get("date"):
            dates.append(report["date"])
    return {"commands": spec.get("commands", []),
            "software": dict(software), "trained_on": dict(trained), "evaluated_on": dict(evaluated),
            "evaluated_between": [min(dates), max(dates)] if dates else None,
            "timing": None if timing is None else {"machine": machine(timing["environment"]),
                                                   "date": timing["date"]}}


def machine(env: dict) -> str:
    """A machine in words: the GPU's name, or the CPU's model and the threads used."""
    if env.get("gpu"):
        return env["gpu"]
    return f"{env.get('cpu_model') or env.get('cpu') or 'CPU'}, {env.get('threads')} threads"


def markdown(prov: dict) -> list[str]:
    """The report's provenance section."""
    lines = ["## Provenance", ""]
    if prov["commands"]:
        lines += ["Commands that ran this folder (the same command resumes it):", ""]
        lines += [f"    {c}" for c in prov["commands"]] + [""]
    lines.append(f"- Software (cells): {_counted(prov['software'])}")
    lines.append(f"- Trained on (cells): {_counted(prov['trained_on'])}")
    when = "" if prov["evaluated_between"] is None else \
        f", between {prov['evaluated_between'][0]} and {prov['evaluated_between'][1]}"
    lines.append(f"- Evaluated on (cells): {_counted(prov['evaluated_on'])}{when}")
    if prov["timing"]:
        lines.append(f"- Wall-time axis: the timing pass on {prov['timing']['machine']}, {prov['timing']['date']}")
    return lines + [""]


def add_command(previous: dict | None, command: str | None) -> list[str]:
    """sweep.json's command list with `command` added, once."""
    commands = list((previous or {}).get("commands", []))
    if command and command not in commands:
        commands.append(command)
    return commands


def _software(env: dict) -> str:
    return f"gatfast {env.get('gatfast')}, torch {env.get('torch')}, Python {env.get('python')}"


def _counted(counts: dict) -> str:
    if not counts:
        return "not recorded"
    return "; ".join(f"{what} ({n})" for what, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
