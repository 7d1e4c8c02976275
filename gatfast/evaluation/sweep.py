"""`gatfast sweep`: every (dataset, method, seed) cell trained and evaluated in its own run
folder OUT/DATASET/METHOD/seedS; gatfast.evaluation.report then reports over them.

A sweep can be stopped at any point and started again with the same command, on this
machine or, from a copy of the folder without its checkpoints, on another: a cell with
eval.json is done (its record is all a report needs); one with summary.json and its
checkpoint is trained and only evaluated; one with a checkpoint but no summary resumes
training from it; one whose record says trained but whose checkpoint is not here (it was
trained elsewhere, and checkpoints are not copied) trains again; the rest start. A cell
whose evaluation was stopped goes on from its last finished attack (eval.partial.json,
gatfast.evaluation.journal), where its model is the same, weight for weight. The
transfer attack of a cell uses as surrogate the same dataset and method trained with the
next seed of the sweep (so it needs two seeds or more); where that cell is evaluated but
its checkpoint is not here, a copy of it trains under OUT/.surrogates, its record untouched.

Cells run in groups, one (dataset, method) with all its seeds: the group's seeds train,
then are evaluated. A group finished on one machine leaves nothing a later machine needs
but the small records, so a study longer than any one machine's life still finishes. Its
cells then train on machines of different speeds: a timed sweep (the study's) first times
every method's steps in turns on one machine (gatfast.train.cost.training_seconds,
OUT/timing.json), and its report's wall-time axis comes from there, each cell's own wall
time beside it.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import time
from pathlib import Path

from gatfast import train
from gatfast.evaluation import provenance, suite, variants
from gatfast.ops import checks
from gatfast.train import cost, data, engine, runs


@dataclasses.dataclass
class SweepSpec:
    datasets: tuple
    methods: tuple                  # variant labels: "pgd_at", "pgd_at:attack_steps=3" (variants.py)
    seeds: tuple
    eps: dict                       # dataset -> eps
    train_options: dict             # extra TrainConfig fields for every cell
    eval_config: suite.EvalConfig
    first: tuple = ()               # labels trained and evaluated before the others (a study's headline)
    timed: bool = False             # time every method's steps on one machine first (OUT/timing.json)

    def cells(self):
        """Every (dataset, method, seed)."""
        for d in self.datasets:
            for m in self.methods:
                for s in self.seeds:
                    yield d, m, s

    def stages(self) -> list[list[tuple]]:
        """The cells in the order they run: the `first` methods' cells, then the rest."""
        first = [c for c in self.cells() if c[1] in self.first]
        rest = [c for c in self.cells() if c[1] not in self.first]
        return [stage for stage in (first, rest) if stage]

    def groups(self) -> list[list[tuple]]:
        """The cells in the order they run, one list per (dataset, method): stage by stage,
        and in a stage the match variants last (they need the wall times of the others)."""
        ordered = []
        for stage in self.stages():
            labels = sorted(dict.fromkeys(m for _, m, _ in stage), key=lambda m: variants.parse(m).match is not None)
            ordered += [[c for c in stage if c[:2] == (d, m)] for m in labels for d in self.datasets]
        return [g for g in ordered if g]


def cell_dir(out: Path, dataset: str, method: str, seed: int) -> Path:
    return Path(out) / dataset / variants.parse(method).folder / f"seed{seed}"


def parse_eps(text: str, datasets) -> dict:
    """"0.3" for every dataset, or "mnist5k=0.3,digits=0.2"."""
    if "=" not in text:
        try:
            return {d: float(text) for d in datasets}
        except ValueError:
            raise train.ConfigError(f"--eps must be a number or dataset=eps pairs, got {text!r}") from None
    eps = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        try:
            eps[name.strip()] = float(value)
        except ValueError:
            raise train.ConfigError(f"--eps: {part!r} is not dataset=number") from None
    missing = [d for d in datasets if d not in eps]
    if missing:
        raise train.ConfigError(f"--eps gives no eps for {', '.join(missing)}")
    return eps


def cell_config(spec: SweepSpec, dataset: str, method: str, seed: int, epochs: int | None = None) -> train.TrainConfig:
    """The cell's TrainConfig; `epochs` for a match variant (its own come from the cells it matches)."""
    variant = variants.parse(method)
    options = {"eval_pgd_steps": 0, **spec.train_options, **variant.config_options()}  # the eval is the suite
    if epochs is not None:
        options["epochs"] = epochs
    return train.TrainConfig(dataset=dataset, method=variant.method, seed=seed, eps=spec.eps[dataset], **options)


def matched_epochs(out: Path, spec: SweepSpec, dataset: str, method: str, seed: int) -> int:
    """A match variant's epochs: its base's, scaled by the wall time of the cell it matches
    over its base's, at least 1: the timed ones of OUT/timing.json where the sweep has them
    (one machine's), else those of the two cells as trained (same dataset and seed)."""
    variant = variants.parse(method)
    base_epochs = cell_config(spec, dataset, variant.base, seed).epochs
    timed = load_timing(out)
    keys = {label: f"{dataset}/{variants.parse(label).timed}" for label in (variant.base, variant.match)}
    if timed and all(key in timed["cells"] for key in keys.values()):
        total = {label: timed["cells"][key]["total_s"] for label, key in keys.items()}
        return max(1, round(base_epochs * total[variant.match] / total[variant.base]))
    walls = {}
    for label in (variant.base, variant.match):
        summary = cell_dir(out, dataset, label, seed) / "summary.json"
        if not summary.is_file():
            raise train.ConfigError(f"{method} on {dataset} seed {seed} needs {label} trained first")
        walls[label] = json.loads(summary.read_text())["train_wall_s"]
    return max(1, round(base_epochs * walls[variant.match] / walls[variant.base]))


def check_datasets(datasets) -> None:
    if not datasets:
        raise train.ConfigError("datasets: name at least one")
    unknown = [v for v in datasets if v not in data.DATASETS]
    if unknown:
        raise train.ConfigError(f"datasets: unknown {unknown[0]!r}; choose from {', '.join(data.DATASETS)}")


def validate(spec: SweepSpec) -> None:
    """Every cell's config and the eval settings, before anything runs."""
    check_datasets(spec.datasets)
    if not spec.methods:
        raise train.ConfigError("methods: name at least one")
    for label in spec.methods:
        variants.parse(label)  # names the bad part
    if len({variants.parse(m).folder for m in spec.methods}) < len(spec.methods):
        raise train.ConfigError("methods: a variant is named twice")
    if not spec.seeds:
        raise train.ConfigError("seeds: name at least one")
    try:
        for s in spec.seeds:
            checks.seed(s, "seeds")
    except (TypeError, ValueError):
        raise train.ConfigError(f"seeds must be integers >= 0, got {', '.join(map(str, spec.seeds))}") from None
    for label in spec.methods:
        _check_match(variants.parse(label), spec)
    unknown_first = [m for m in spec.first if m not in spec.methods]
    if unknown_first:
        raise train.ConfigError(f"first names {unknown_first[0]!r}, which --methods does not")
    extra = sorted(set(spec.eps) - set(spec.datasets))
    if extra:
        raise train.ConfigError(f"eps names {', '.join(extra)}, which --datasets does not")
    for d, m, s in spec.cells():
        _validate_cell(spec, d, m, s)
    spec.eval_config.validate(spec.train_options.get("norm", "linf"))  # one norm for every cell


def _validate_cell(spec: SweepSpec, dataset: str, method: str, seed: int) -> None:
    """The cell's config; an error that the variant's own options cause names the variant."""
    try:
        cell_config(spec, dataset, method, seed).validate()
    except train.ConfigError as e:
        plain = dataclasses.replace(spec, methods=(variants.parse(method).method,), first=())
        try:
            cell_config(plain, dataset, plain.methods[0], seed).validate()
        except train.ConfigError:
            raise e from None
        raise train.ConfigError(f"--methods {method}: {e}") from None


def _check_match(variant: variants.Variant, spec: SweepSpec) -> None:
    """A match variant's base and target are in the sweep and run no later than it."""
    if variant.match is None:
        return
    stage = {label: i for i, cells in enumerate(spec.stages()) for label in {c[1] for c in cells}}
    for role, label in (("its base", variant.base), ("the variant it matches", variant.match)):
        if label not in spec.methods:
            raise train.ConfigError(f"--methods {variant.label}: {role} {label!r} must be in --methods too")
        if variants.parse(label).match is not None or stage[label] > stage[variant.label]:
            raise train.ConfigError(f"--methods {variant.label}: {role} {label!r} must train before it")


_clock = time.monotonic  # the time limit's clock (a test moves it)


TIMING = "timing.json"


def load_timing(out) -> dict | None:
    """OUT/timing.json, or None where the sweep was not timed."""
    path = Path(out) / TIMING
    return json.loads(path.read_text()) if path.is_file() else None


def timed_labels(spec: SweepSpec) -> list[str]:
    """The DATASET/METHOD of every variant a timing pass times: a match variant's steps are
    its base's, one that differs only in a learning rate has its twin's (Variant.timed)."""
    labels = (f"{d}/{variants.parse(m).timed}" for d in spec.datasets for m in spec.methods)
    return list(dict.fromkeys(labels))


def measure_timing(spec: SweepSpec, out, *, device="auto", log=print, rounds: int = 5, steps: int = 3) -> dict:
    """Times every variant's steps and epoch's end in turns on this machine, in one run,
    and writes OUT/timing.json (with the machine and the date)."""
    labels = timed_labels(spec)
    configs = {}
    for label in labels:
        d, m = label.split("/", 1)
        configs[label] = dataclasses.replace(cell_config(spec, d, m, spec.seeds[0]), device=device, progress=False)
    log(f"timing the steps of {len(labels)} variants in turns ({rounds} rounds of {steps} steps each), "
        "for the wall-time axis: nothing else should run now")
    cells = cost.training_seconds(configs, rounds=rounds, steps=steps, log=log)
    timing = {"date": datetime.date.today().isoformat(),
              "environment": engine.environment(train.resolve_device(device)),
              "rounds": rounds, "steps": steps,
              "statistic": "median over rounds of a step's seconds, the variants taking turns, scaled to the "
                           "schedule (epoch_s); checkpoint writes and logging not timed",
              "cells": cells}
    runs.write_json(Path(out) / TIMING, timing)
    return timing


def run(spec: SweepSpec, out, *, device="auto", log=print, progress=True, evaluate: bool = True,
        stop_after_s: float | None = None, retime: bool = False, command: str | None = None) -> bool:
    """Trains and evaluates every cell, group by group, skipping what is done; True when
    every cell is done. evaluate=False trains every cell and evaluates none (for a machine
    whose evaluations will share it). stop_after_s: start no training or evaluation after
    so many seconds (a machine's or a job's time running out): what runs then finishes,
    nothing is cut off half-way, and the same call goes on later. A timed spec times its
    variants first where OUT/timing.json lacks one of them, or `retime` asks. `command`, the
    command line that called it, joins sweep.json's list of those that ran the folder."""
    validate(spec)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    previous = json.loads((out / "sweep.json").read_text()) if (out / "sweep.json").is_file() else None
    runs.write_json(out / "sweep.json", {"datasets": list(spec.datasets), "methods": list(spec.methods),
                                               "seeds": list(spec.seeds), "eps": spec.eps,
                                               "train_options": spec.train_options,
                                               "eval": dataclasses.asdict(spec.eval_config),
                                               "commands": provenance.add_command(previous, command)})
    groups = spec.groups()
    cells = [c for group in groups for c in group]
    number = {c: i for i, c in enumerate(cells, 1)}
    resolved = str(train.resolve_device(device))
    started = _clock()
    timing = load_timing(out)
    if spec.timed and (retime or timing is None or not set(timed_labels(spec)) <= set(timing["cells"])):
        measure_timing(spec, out, device=device, log=log)

    def time_is_up(cell, what) -> bool:
        if stop_after_s is None or _clock() - started < stop_after_s:
            return False
        d, m, s = cell
        log(f"[{number[cell]}/{len(cells)}] {d} {m} seed {s}: not {what}: the time limit "
            f"({stop_after_s / 3600:g} h) has passed; the same command goes on from here")
        return True

    for group in groups:
        # the group's seeds train first (each one's transfer surrogate is another seed),
        # each alone on the machine (wall time is a cost axis), then are evaluated
        for cell in group:
            if time_is_up(cell, "trained"):
                return False
            _train_cell(spec, out, cell, f"[{number[cell]}/{len(cells)}]", device, log, progress)
        for cell in group if evaluate else ():
            if time_is_up(cell, "evaluated"):
                return False
            _evaluate_cell(spec, out, cell, f"[{number[cell]}/{len(cells)}]", resolved, device, log, progress)
    return True


def _done(out, cell, tag, marker: str, state: str, log) -> bool:
    """Whether the cell holds `marker` (that stage is done), said in the log."""
    d, m, s = cell
    if not (cell_dir(out, d, m, s) / marker).is_file():
        return False
    log(f"{tag} {d} {m} seed {s}: {state}")
    return True


def _train_cell(spec, out, cell, tag, device, log, progress) -> None:
    if _done(out, cell, tag, "eval.json", "evaluated", log):
        return  # its record is final: a report needs no more, nor does its model
    d, m, s = cell
    folder = cell_dir(out, d, m, s)
    has_model = (folder / train.CHECKPOINT).is_file()
    if (folder / "summary.json").is_file():
        if has_model:
            log(f"{tag} {d} {m} seed {s}: trained")
            return
        # trained on a machine that is gone: the record alone cannot be evaluated
        log(f"{tag} {d} {m} seed {s}: its checkpoint is not here (trained elsewhere): training again")
        for stale in ("summary.json", "log.jsonl"):
            (folder / stale).unlink(missing_ok=True)
    epochs = matched_epochs(out, spec, d, m, s) if variants.parse(m).match is not None else None
    log(f"{tag} {d} {m} seed {s}: {'resuming' if has_model else 'training'}"
        + (f" ({epochs} epochs: the wall time of {variants.parse(m).match})" if epochs else ""))
    config = dataclasses.replace(cell_config(spec, d, m, s, epochs), device=device, progress=progress)
    train.train(config, folder, resume=has_model, log=log)


def _evaluate_cell(spec, out, cell, tag, resolved, device, log, progress) -> None:
    if _done(out, cell, tag, "eval.json", "evaluated", log):
        return
    d, m, s = cell
    folder = cell_dir(out, d, m, s)
    log(f"{tag} {d} {m} seed {s}: evaluating")
    surrogate = None
    if len(spec.seeds) > 1:
        other = spec.seeds[(spec.seeds.index(s) + 1) % len(spec.seeds)]
        surrogate = _surrogate(out, (d, m, other), device, log, progress)
    report = suite.evaluate_run(folder, spec.eval_config, surrogate_dir=surrogate, device=resolved,
                                progress=progress, log=log)
    failed = [c["name"] for c in report["checks"] if c["passed"] is False]
    if failed:
        log(f"  sanity checks FAILED: {', '.join(failed)} (see {folder / 'eval.json'})")


def _surrogate(out, cell, device, log, progress) -> Path:
    """The folder of a trained model of `cell` for the transfer attack: the cell's own, or,
    where the cell was evaluated elsewhere and its checkpoint is not here, a copy trained
    from its config.json under OUT/.surrogates (not a cell: nothing of it is reported)."""
    own = cell_dir(out, *cell)
    if (own / train.CHECKPOINT).is_file():
        return own
    copy = Path(out) / ".surrogates" / own.relative_to(out)
    if not (copy / "summary.json").is_file():
        log(f"  the surrogate {cell[1]} seed {cell[2]} was trained elsewhere: training a copy in {copy}")
        config = dataclasses.replace(train.load_config(own), device=device, progress=progress)
        train.train(config, copy, resume=(copy / train.CHECKPOINT).is_file(), log=log)
    return copy


def timed_wall(timing: dict | None, dataset: str, method: str, epochs: int | None) -> float | None:
    """A cell's wall time by the timing pass: the timed seconds of the epochs it trained
    (a match variant's are its base's steps; epochs beyond the timed schedule cost as its
    last, every method's steps being alike once eps has ramped up)."""
    if not timing or not epochs:
        return None
    cell = timing["cells"].get(f"{dataset}/{variants.parse(method).timed}")
    if cell is None:
        return None
    per_epoch = cell["epoch_s"]
    return float(sum(per_epoch[min(e, len(per_epoch) - 1)] for e in range(epochs)))
