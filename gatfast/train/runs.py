"""Run folders: the checkpoint format, atomic JSON files, and loading a finished run
(load_config, load_run).

Checkpoints: any nested state (module and optimiser state dicts, RNG states, method
state) in ONE safetensors file, written to a temporary file and renamed over the old one,
so a crash leaves either the previous checkpoint or the new one, never half of each.

The tensors go into safetensors under their path in the nesting ("optimizers/classifier/
state/0/exp_avg"); everything else (numbers, strings, the nesting itself) goes into the
file's metadata as JSON, with each tensor replaced by a {"__tensor__": key} marker.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from gatfast.train import data
from gatfast.train.build import build_classifier, build_generator
from gatfast.train.config import ConfigError, TrainConfig

CHECKPOINT = "checkpoint.safetensors"
_FORMAT = "gatfast-checkpoint-1"


def _flatten(obj, path: str, tensors: dict):
    if isinstance(obj, torch.Tensor):
        key = path or "root"
        # safetensors stores dense, contiguous, non-shared tensors only.
        tensors[key] = obj.detach().to("cpu").contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        if not all(isinstance(k, (str, int)) for k in obj):
            raise TypeError(f"checkpoint dict keys must be str or int, at {path or 'root'!r}")
        # int keys (optimiser state is keyed by parameter index) are kept as such.
        return {"__dict__": [[k, _flatten(v, f"{path}/{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        kind = "__list__" if isinstance(obj, list) else "__tuple__"
        return {kind: [_flatten(v, f"{path}/{i}", tensors) for i, v in enumerate(obj)]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} in a checkpoint (at {path or 'root'!r})")


def _unflatten(obj, tensors: dict):
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {k: _unflatten(v, tensors) for k, v in obj["__dict__"]}
        if "__list__" in obj:
            return [_unflatten(v, tensors) for v in obj["__list__"]]
        if "__tuple__" in obj:
            return tuple(_unflatten(v, tensors) for v in obj["__tuple__"])
    return obj


def save(path: str | os.PathLike, state: dict) -> None:
    """Write `state` to `path` atomically (temporary file in the same folder, fsync, rename)."""
    path = Path(path)
    tensors: dict = {}
    skeleton = _flatten(state, "", tensors)
    metadata = {"format": _FORMAT, "state": json.dumps(skeleton, allow_nan=True)}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    with safe_open(str(path), framework="pt", device=str(device)) as f:
        metadata = f.metadata() or {}
        if metadata.get("format") != _FORMAT:
            raise ValueError(f"{path} is not a gatfast checkpoint (format {metadata.get('format')!r})")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return _unflatten(json.loads(metadata["state"]), tensors)


def write_json(path: str | os.PathLike, obj) -> None:
    """A JSON file written atomically, like the checkpoint."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---- a finished run ----------------------------------------------------------------------------

def load_config(run_dir) -> TrainConfig:
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a gatfast run folder (no config.json)")
    saved = json.loads(path.read_text())["config"]
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in saved.items() if k in known})


@dataclass
class Run:
    classifier: torch.nn.Module
    generator: torch.nn.Module | None
    config: TrainConfig
    summary: dict


def load_run(run_dir, device: str | torch.device = "cpu") -> Run:
    """The trained classifier (eval mode), the generator (None for methods without one)
    and the config of a run folder."""
    run_dir = Path(run_dir)
    config = load_config(run_dir)
    if not (run_dir / CHECKPOINT).is_file():
        raise ConfigError(f"{run_dir} holds no trained model ({CHECKPOINT} is missing)")
    shape, num_classes = data.SHAPES[config.dataset]
    ds = data.DatasetSplits(config.dataset, None, None, num_classes, shape)
    state = load(run_dir / CHECKPOINT, device)
    classifier = build_classifier(config, ds).to(device)
    classifier.load_state_dict(state["modules"]["classifier"])
    classifier.eval()
    generator = None
    if "generator" in state["modules"]:
        generator = build_generator(config, ds).to(device)
        generator.load_state_dict(state["modules"]["generator"])
        generator.eval()
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    return Run(classifier, generator, config, summary)

