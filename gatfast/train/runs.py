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
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from gatfast.train import data
from gatfast.train.build import build_classifier, build_generator
from gatfast.train.config import ConfigError, TrainConfig, resolve_device

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


def _save_tensors(tensors: dict, filename: str, metadata: dict) -> None:
    """safetensors' save_file, with its I/O failures raised as the OSError they are:
    safetensors reports a full disk as a SafetensorError ("... (os error 28)")."""
    try:
        save_file(tensors, filename, metadata=metadata)
    except OSError:
        raise
    except Exception as e:
        found = re.search(r"os error (\d+)", str(e))
        if not found:
            raise
        code = int(found.group(1))
        raise OSError(code, os.strerror(code), filename) from e


def save(path: str | os.PathLike, state: dict) -> None:
    """Write `state` to `path` atomically (temporary file in the same folder, fsync, rename)."""
    path = Path(path)
    tensors: dict = {}
    skeleton = _flatten(state, "", tensors)
    metadata = {"format": _FORMAT, "state": json.dumps(skeleton, allow_nan=True)}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        _save_tensors(tensors, tmp, metadata)  # a full disk raises here: the old file stays
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class CheckpointError(ConfigError):
    """A checkpoint that cannot be read (truncated, corrupted, not gatfast's, or not the
    networks its config.json describes): one clear line, never a half-loaded model."""


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != _FORMAT:
                raise CheckpointError(f"{path} is not a gatfast checkpoint (format {metadata.get('format')!r})")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        return _unflatten(json.loads(metadata["state"]), tensors)
    except CheckpointError:
        raise
    except Exception as e:  # safetensors' own errors, bad JSON, a missing tensor key
        raise CheckpointError(f"{path} is unreadable (truncated or corrupted?): {type(e).__name__}: {e}") from None


def _write_atomically(path: str | os.PathLike, write) -> None:
    """write(file) into a temporary file beside `path`, fsync, then rename over it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_folder_or_new(path, flag: str, what: str = "a folder") -> None:
    """An output folder: one that exists, or nothing yet; a file there is a ConfigError naming `flag`."""
    if path is not None and Path(path).exists() and not Path(path).is_dir():
        raise ConfigError(f"{flag}: {path} is a file, not {what}")


def write_json(path: str | os.PathLike, obj) -> None:
    """A JSON file written atomically, like the checkpoint."""
    _write_atomically(path, lambda f: (json.dump(obj, f, indent=2, sort_keys=True), f.write("\n")))


def write_text(path: str | os.PathLike, text: str) -> None:
    _write_atomically(path, lambda f: f.write(text))


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Temporary files a killed process left in a run folder (".NAME.XXXX.tmp"); removed."""
    folder = Path(folder)
    stale = sorted(folder.glob(".*.tmp")) if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


# ---- a finished run ----------------------------------------------------------------------------

RUN_FORMAT = "gatfast-run-1"   # config.json's format; folders written before it had none


def load_config(run_dir) -> TrainConfig:
    """The TrainConfig a run folder was trained with. A config.json from a newer gatfast
    (another format, or options this one does not know) is refused, not half-read."""
    if not isinstance(run_dir, (str, os.PathLike)):
        raise TypeError(f"run_dir must be a path, got {type(run_dir).__name__}")
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a gatfast run folder (no config.json)")
    try:
        document = json.loads(path.read_text())
        saved = document["config"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise ConfigError(f"{path} is unreadable (truncated or corrupted?): {type(e).__name__}: {e}") from None
    written_by = document.get("environment", {}).get("gatfast", "an unknown version")
    if document.get("format", RUN_FORMAT) != RUN_FORMAT:
        raise ConfigError(f"{path} has format {document.get('format')!r} (written by gatfast {written_by}); "
                          f"this gatfast reads {RUN_FORMAT}: upgrade gatfast")
    unknown = sorted(set(saved) - {f.name for f in dataclasses.fields(TrainConfig)})
    if unknown:
        raise ConfigError(f"{path} has options this gatfast does not know ({', '.join(unknown)}; written by "
                          f"gatfast {written_by}): upgrade gatfast")
    try:
        config = TrainConfig(**saved)
        # data_root is where this machine keeps the files: checked where it is used
        dataclasses.replace(config, data_root=None).validate()
        return config
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{path} holds a configuration that does not validate: {e}") from None


def load_module(module: torch.nn.Module, state: dict, name: str, run_dir) -> None:
    """state["modules"][name] into `module`, or a CheckpointError saying they do not match."""
    try:
        module.load_state_dict(state["modules"][name])
    except (KeyError, RuntimeError, TypeError) as e:
        raise CheckpointError(f"{run_dir}: the checkpoint's {name} does not match config.json "
                              f"({type(e).__name__}: {str(e).splitlines()[0]})") from None


@dataclass
class Run:
    classifier: torch.nn.Module
    generator: torch.nn.Module | None
    config: TrainConfig
    summary: dict


def load_run(run_dir, device: str | torch.device = "cpu") -> Run:
    """The trained classifier (eval mode), the generator (None for methods without one)
    and the config of a run folder."""
    config = load_config(run_dir)
    run_dir = Path(run_dir)
    device = resolve_device(str(device)) if not isinstance(device, torch.device) else device
    if not (run_dir / CHECKPOINT).is_file():
        raise ConfigError(f"{run_dir} holds no trained model ({CHECKPOINT} is missing)")
    shape, num_classes = data.SHAPES[config.dataset]
    ds = data.DatasetSplits(config.dataset, None, None, num_classes, shape)
    state = load(run_dir / CHECKPOINT, device)
    classifier = build_classifier(config, ds).to(device)
    load_module(classifier, state, "classifier", run_dir)
    classifier.eval()
    generator = None
    if "generator" in state.get("modules", {}):
        generator = build_generator(config, ds).to(device)
        load_module(generator, state, "generator", run_dir)
        generator.eval()
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    return Run(classifier, generator, config, summary)

