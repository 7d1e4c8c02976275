"""An evaluation's journal: each attack's result written as it finishes, so that an
evaluation stopped half-way (a crash, a machine's or a session's time running out) goes
on from the attack it was in, not from the start. A study's robust cell on mnist5k takes
about an hour on two CPU cores, most of it in AutoAttack's FAB-T and Square; losing it
at its last attack is what this prevents.

The journal is trusted only for the same question: its fingerprint hashes the evaluation's
settings, the images and labels, and the weights of the model (and of the transfer
surrogate). Any difference, a model trained again to other weights included, starts the
evaluation over. Every attack seeds its own random numbers, so skipping the finished ones
leaves the rest as they would have been: a resumed evaluation reports what an unbroken one
would (tests/test_evaluate.py holds it to that). The eps sweep and the certified bound, a
minute or two, run again. A study's cells are committed without their checkpoints, so a
cell's journal helps another machine only where training it again gives the same weights.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from gatfast._version import __version__
from gatfast.train import runs

VERSION = 1  # of the journal's layout; another version is not read


def fingerprint(settings: dict, tensors: list[torch.Tensor], models: list[torch.nn.Module | None]) -> str:
    """A hash of what decides the evaluation's outcome: settings (JSON-ready), the images and
    labels, and every model's parameters and buffers (None: no such model), with the
    versions of gatfast and torch (another torch may round otherwise)."""
    versions = {"gatfast": __version__, "torch": torch.__version__}
    digest = hashlib.sha256(json.dumps({"settings": settings, "versions": versions}, sort_keys=True,
                                       default=str).encode())
    for t in tensors:
        _update(digest, "tensor", t)
    for model in models:
        digest.update(b"model" if model is not None else b"none")
        for name, t in (model.state_dict().items() if model is not None else ()):
            _update(digest, name, t)
    return digest.hexdigest()


def _update(digest, name: str, t: torch.Tensor) -> None:
    t = t.detach().to("cpu").contiguous()
    digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
    digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def load(path: Path | None, key: str, log) -> dict:
    """The finished attacks' records {key: record} of the journal at `path` when it answers
    the same question (`key`, from fingerprint); else {} (said in the log when one was there)."""
    if path is None or not Path(path).is_file():
        return {}
    try:
        journal = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        log(f"  the journal {path} cannot be read ({e}): evaluating from the start")
        return {}
    if journal.get("version") != VERSION or journal.get("fingerprint") != key:
        log(f"  the journal {path} is of other settings, images or weights: evaluating from the start")
        return {}
    return dict(journal.get("attacks", {}))


def save(path: Path | None, key: str, records: dict) -> None:
    """The journal with every finished attack's record, written atomically (a kill while
    writing leaves the previous journal)."""
    if path is not None:
        runs.write_json(path, {"version": VERSION, "fingerprint": key, "attacks": records})


def path_for(report: Path) -> Path:
    """eval.json's journal: eval.partial.json beside it."""
    report = Path(report)
    return report.with_name(f"{report.stem}.partial{report.suffix}")
