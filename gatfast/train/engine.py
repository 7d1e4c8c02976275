"""The training engine: one loop for every method, with a run folder that survives crashes.

RUN_DIR/
  config.json              the TrainConfig, versions, device, build info (written first)
  log.jsonl                one line per finished epoch (losses, accuracies, lr, eps, wall time),
                           rewritten atomically from the checkpoint's copy after each save,
                           so it always ends at the checkpoint's epoch
  checkpoint.safetensors   classifier, generator, optimisers, method and RNG state, and the
                           log so far, written atomically after every epoch (gatfast.train.runs)
  summary.json             at the end: wall time, stop reason, final robustness figures

Exact resume: the data order of epoch e is a permutation drawn from (seed, e), the
learning rate and eps schedules are functions of the position in training, and the
checkpoint holds the optimisers and every RNG state; so N epochs, a stop, and M more
give the same weights as N + M epochs in one go (on the CPU).

Distributed (torchrun, WORLD_SIZE > 1): gatfast.train.distributed.

The stages of a run: _settle_config (a new run or the saved one resumed), _set_up (device,
data, networks, method, the engine's hooks), _restore or _open_folder, _run_epoch per
epoch (then _save_epoch), and _finish (summary and the closing robustness check).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from gatfast._version import __version__
from gatfast import attacks
from gatfast.ops import backends
from gatfast.train import cost, data, distributed, methods
from gatfast.train.build import build_classifier, build_method
from gatfast.train.config import ConfigError, TrainConfig, resolve_device
from gatfast.train.runs import (CHECKPOINT, RUN_FORMAT, CheckpointError, check_folder_or_new, load, load_config,
                                load_module, remove_stale_temporaries, save, write_json, write_text)


def epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The data order of one epoch: a function of (seed, epoch) only, for exact resume."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def environment(device: torch.device) -> dict:
    env = {"gatfast": __version__, "torch": torch.__version__, "python": platform.python_version(),
           "platform": platform.platform(), "device": str(device), "build": backends.build_info()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    else:
        env["cpu"] = platform.processor() or platform.machine()
        env["cpu_model"] = _cpu_model()
        env["threads"] = torch.get_num_threads()
    return env


def _cpu_model() -> str | None:
    """The processor's name (Linux's /proc/cpuinfo), so that wall times taken on different
    machines, as a study's that outlives one machine are, say what they ran on."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        return None

# ---- the loop ----------------------------------------------------------------------------------

def _rng_state(device):
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state, device):
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _restore_rng(s: "_Session", state: dict, log) -> None:
    """This process's own RNG state: each rank draws its own noise, so each saved its own
    ("rng_ranks"; "rng" is rank 0's, which is all a one-process run has)."""
    ranks = state.get("rng_ranks") or [state["rng"]]
    if len(ranks) == s.procs.world:
        _set_rng_state(ranks[s.procs.rank], s.device)
        return
    # Another number of processes than the run was saved with: the noise streams cannot
    # continue as they were, so each process starts a fresh one (the weights still resume).
    torch.manual_seed(s.config.seed * 1_000_003 + 7919 * s.procs.rank + 104_729 * state["epoch"])
    if s.procs.main:
        log(f"resuming with {s.procs.world} processes where the run saved {len(ranks)}: the random "
            f"draws start afresh, so the weights will not match an uninterrupted run's exactly")


def _progress(total, desc, enabled):
    if not enabled:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True, file=sys.stderr)


@torch.no_grad()
def accuracy(model, x, y, batch_size=500):
    correct = 0
    for i in range(0, len(y), batch_size):
        correct += int((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
    return correct / len(y)


def closing_attacks(model, config: TrainConfig, progress: bool = False) -> list:
    """The closing check's attacks: the evaluation suite's own FGSM and PGD classes (PGD
    with APGD's step size, best iterate, seed 0), so that summary.json's PGD-k means what
    `gatfast eval`'s PGD-k means; never the training methods' last-iterate `pgd`."""
    common = {"eps": config.eps, "norm": config.norm, "batch_size": 500, "progress": progress}
    return [("fgsm", attacks.FGSM(model, **common)),
            (f"pgd{config.eval_pgd_steps}", attacks.PGD(model, steps=config.eval_pgd_steps, **common))]


def robustness(model, ds: data.DatasetSplits, config: TrainConfig, device, progress=True) -> dict:
    """Clean, FGSM and PGD-k (k = eval_pgd_steps) accuracy on the test split, deployed
    model (eval mode): see closing_attacks. The full attack suite is `gatfast eval`."""
    model.eval()
    x, y = (t.to(device) for t in ds.test.tensors)
    out = {"clean": accuracy(model, x, y)}
    for name, attack in closing_attacks(model, config, progress):
        out[name] = float(attacks.correct(model, attack(x, y), y).float().mean())
    return out


class TrainingStopped(RuntimeError):
    """Training ended early with a reason (non-finite losses); the run folder holds the last good state."""


def train(config: TrainConfig, out_dir, *, resume: bool = False, log=print, on_end=None) -> dict:
    """Train per `config` into `out_dir`; returns the summary. With resume=True, continue the
    run in out_dir (its config, with `epochs` possibly raised) from its last checkpoint.
    on_end(method), if given, runs on every process once training ends (before evaluation)."""
    out = Path(out_dir)
    config = _settle_config(config, out, resume)
    config.validate()
    procs = distributed.init(config.device)
    try:
        session = _set_up(config, out, procs)
        if procs.main:
            remove_stale_temporaries(out)
        if resume and (out / CHECKPOINT).is_file():
            start_epoch, wall_before = _restore(session, log)
        else:  # a new run, or one stopped before its first checkpoint: from epoch 0
            start_epoch, wall_before = _open_folder(session), 0.0
        return _run(session, start_epoch, wall_before, log, on_end)
    finally:
        # A process that exits with its gloo group alive can abort ("terminate called
        # without an active exception") while another rank still evaluates: the group
        # is closed by whoever opened it.
        procs.close()


def _settle_config(config: TrainConfig, out: Path, resume: bool) -> TrainConfig:
    """The config to run: the one given for a new run (refusing a folder that holds one),
    or the saved one with `epochs` (and progress and device) from the one given."""
    check_folder_or_new(out, "out", "a run folder")
    if resume:
        if not (out / "config.json").is_file():
            raise ConfigError(f"--resume: {out} holds no run to resume (no config.json)")
        saved = load_config(out)
        if config.epochs < saved.epochs:
            raise ConfigError(f"--resume: epochs {config.epochs} is fewer than the run's {saved.epochs}")
        return dataclasses.replace(saved, epochs=config.epochs, progress=config.progress, device=config.device)
    if (out / CHECKPOINT).exists():
        raise ConfigError(f"{out} already holds a run: pass --resume to continue it, or choose another --out")
    return config


@dataclass
class _Session:
    """What every stage of a run shares."""
    config: TrainConfig
    out: Path
    procs: distributed.Processes
    device: torch.device
    ds: data.DatasetSplits
    x_train: torch.Tensor
    y_train: torch.Tensor
    classifier: torch.nn.Module
    method: methods.Method
    base_lrs: dict
    share: float = 1.0        # this process's share of the global batch (torchrun)
    skipped_in_row: int = 0
    log_records: list = dataclasses.field(default_factory=list)   # log.jsonl's lines so far

    @property
    def modules(self):
        return self.method.modules()

    @property
    def optimizers(self):
        return self.method.optimizers()


def _device(config: TrainConfig, procs: distributed.Processes) -> torch.device:
    device = resolve_device(config.device)
    if device.type == "cuda" and procs.world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", procs.rank)))
        torch.cuda.set_device(device)
    if config.cuda_graph and device.type != "cuda":
        raise ConfigError("cuda-graph needs a CUDA device (--device cuda)")
    with backends.use_backend(config.backend):
        try:
            backends.resolve(device)
        except RuntimeError as e:
            raise ConfigError(f"backend {config.backend!r} on device {device}: {e}") from None
    if config.batch_size < procs.world:
        raise ConfigError(f"batch-size {config.batch_size} is smaller than the {procs.world} processes")
    return device


def _set_up(config: TrainConfig, out: Path, procs: distributed.Processes) -> _Session:
    """Device, data, networks and method (seeded by config.seed), and the engine's hooks on
    the method's update: the non-finite guard and, under torchrun, gradient averaging."""
    device = _device(config, procs)
    try:
        ds = data.load_dataset(config.dataset, config.data_root, config.download)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        raise ConfigError(str(e)) from e
    x_train, y_train = (t.to(device) for t in ds.train.tensors)
    if config.train_size:
        x_train, y_train = x_train[:config.train_size], y_train[:config.train_size]

    torch.manual_seed(config.seed)
    classifier = build_classifier(config, ds).to(device)
    probe = (x_train[:256], y_train[:256]) if config.method == "fgsm_rs" else None
    method = build_method(config, classifier, ds, probe)
    base_lrs = {k: [g["lr"] for g in o.param_groups] for k, o in method.optimizers().items()}
    session = _Session(config, out, procs, device, ds, x_train, y_train, classifier, method, base_lrs)
    if procs.world > 1:
        procs.broadcast_parameters(session.modules.values())
        method.update.gradient_hook = lambda: distributed.average_gradients(list(session.modules.values()),
                                                                             session.share)
        torch.manual_seed(config.seed * 1_000_003 + 7919 * procs.rank)  # different noise per process
    # A captured step cannot stop on the host to look at its loss.
    method.update.step_guard = None if config.cuda_graph else procs.all_agree
    return session


def _restore(s: _Session, log) -> tuple[int, float]:
    """Load the checkpoint into the session; returns (epochs done, wall seconds so far)."""
    state = load(s.out / CHECKPOINT, s.device)
    for k, m in s.modules.items():
        load_module(m, state, k, s.out)
    try:
        for k, o in s.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        s.method.load_state_dict(state["method"])
    except (KeyError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{s.out}: the checkpoint's optimiser or method state does not match config.json "
                              f"({type(e).__name__}: {e})") from None
    _restore_rng(s, state, log)
    s.log_records = list(state["log"]) if "log" in state else _read_log(s.out, state["epoch"])
    if s.procs.main:  # the log as the checkpoint knows it (a kill may have cut it one epoch short)
        _write_log(s)
        log(f"resuming {s.out} at epoch {state['epoch'] + 1} of {s.config.epochs}")
    return state["epoch"], state["wall_s"]


def _write_log(s: _Session) -> None:
    """log.jsonl, whole and atomically, from the records the checkpoint keeps."""
    write_text(s.out / "log.jsonl", "".join(json.dumps(r) + "\n" for r in s.log_records))


def _read_log(out: Path, epochs: int) -> list:
    """log.jsonl's records of the first `epochs` epochs (checkpoints from before the log
    was kept inside them)."""
    path = out / "log.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut short by a crash
    return [r for r in records if r.get("epoch", 0) <= epochs]


def _open_folder(s: _Session) -> int:
    """A new run folder with config.json (rank 0); training starts at epoch 0."""
    if s.procs.main:
        s.out.mkdir(parents=True, exist_ok=True)
        write_json(s.out / "config.json", {"format": RUN_FORMAT, "config": dataclasses.asdict(s.config),
                                           "environment": environment(s.device), "world_size": s.procs.world})
    return 0


def _steps_per_epoch(s: _Session) -> int:
    # A captured step replays one batch shape: the last partial batch is dropped then.
    n = len(s.y_train)
    return n // s.config.batch_size if s.config.cuda_graph else math.ceil(n / s.config.batch_size)


def _run(s: _Session, start_epoch: int, wall_before: float, log, on_end) -> dict:
    config, stop_reason, t_start, epoch = s.config, None, time.perf_counter(), start_epoch
    with backends.use_backend(config.backend):
        for epoch in range(start_epoch, config.epochs):
            t_epoch = time.perf_counter()
            record, skipped, stop_reason = _run_epoch(s, epoch)
            if stop_reason:  # stopped inside the epoch: non-finite losses
                break
            if not _weights_finite(s):  # a step with a finite loss can still leave inf weights behind
                stop_reason = (f"training stopped: non-finite weights after epoch {epoch + 1}; nothing of that "
                               f"epoch was saved, the checkpoint in {s.out} holds the last good epoch; try a "
                               f"lower --lr or amp off")
                break
            epoch_s = time.perf_counter() - t_epoch
            stop_reason = s.method.end_epoch(epoch + 1)
            wall = wall_before + time.perf_counter() - t_start
            # the classifier's learning rate at the epoch's last step: the rate used, not the next one
            record.update({"epoch": epoch + 1, "lr": s.optimizers["classifier"].param_groups[0]["lr"],
                           "eps": s.method.eps, "skipped_steps": skipped, **s.method.epoch_metrics(),
                           "epoch_s": round(epoch_s, 3), "wall_s": round(wall, 3)})
            _save_epoch(s, epoch, record, epoch_s, wall, log)
            if stop_reason:
                break
        if stop_reason and "non-finite" in stop_reason:
            if s.procs.main:
                write_json(s.out / "summary.json", {"stopped": stop_reason, "epochs_done": epoch})
            raise TrainingStopped(stop_reason)
        wall = wall_before + time.perf_counter() - t_start
        if on_end is not None:
            on_end(s.method)
        return _finish(s, epoch, stop_reason, wall, log)


def _weights_finite(s: _Session) -> bool:
    """Every parameter and buffer of every network finite (one host sync per epoch)."""
    tensors = [t for m in s.modules.values() for t in list(m.parameters()) + list(m.buffers())
               if t.is_floating_point()]
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()) if tensors else True


def _set_position(s: _Session, position: float) -> None:
    """Learning rates and eps at `position` epochs into training."""
    for k, o in s.optimizers.items():
        for g, base in zip(o.param_groups, s.base_lrs[k]):
            g["lr"] = base * s.config.lr_factor(position)
    s.method.set_eps(s.config.eps_at(position))


def _run_epoch(s: _Session, epoch: int):
    """One epoch of steps. Returns (the epoch's mean metrics, steps skipped, None), or the
    reason to stop in the last place when max_nonfinite steps in a row were skipped."""
    config, procs = s.config, s.procs
    for m in s.modules.values():
        m.train()
    order = epoch_order(config.seed, epoch, len(s.y_train)).to(s.device)
    steps = _steps_per_epoch(s)
    sums, count, skipped = {}, 0, 0
    bar = _progress(steps, f"{config.method} epoch {epoch + 1}/{config.epochs}", config.progress and procs.main)
    try:
        for i in range(steps):
            _set_position(s, epoch + i / steps)
            idx = order[i * config.batch_size:(i + 1) * config.batch_size]
            if procs.world > 1:  # this process's part of the global batch
                if len(idx) < procs.world:
                    continue  # every process skips it alike
                global_n = len(idx)
                idx = torch.tensor_split(idx, procs.world)[procs.rank]
                s.share = len(idx) / global_n
            metrics = s.method.step(s.x_train[idx], s.y_train[idx])
            step_skipped = bool(metrics.pop("skipped", 0))
            skipped += step_skipped
            s.skipped_in_row = s.skipped_in_row + 1 if step_skipped else 0
            if s.skipped_in_row >= config.max_nonfinite:
                return None, skipped, (f"training stopped: {s.skipped_in_row} steps in a row had a non-finite loss "
                              f"(epoch {epoch + 1}, step {i + 1}); the checkpoint in {s.out} holds the last good "
                              f"epoch; try a lower --lr or amp off")
            if not step_skipped:
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0) + v.float()
                count += 1
            if bar:
                bar.update()
                if i % 10 == 0 and count:
                    bar.set_postfix({k: f"{float(v) / count:.3f}" for k, v in sums.items()
                                     if k in ("loss_classifier", "acc_clean", "acc_adv")})
    finally:
        if bar:
            bar.close()
    record = {k: float(v) / max(count, 1) for k, v in sums.items()}
    if procs.world > 1:
        record = procs.mean_record(record)
        procs.sync_buffers(s.modules.values())
    return record, skipped, None


def _save_epoch(s: _Session, epoch: int, record: dict, epoch_s: float, wall: float, log) -> None:
    """The checkpoint (atomically) and the epoch's log line, on rank 0."""
    config = s.config
    rng_ranks = s.procs.gather(_rng_state(s.device))  # every process takes part
    if not s.procs.main:
        return
    s.log_records.append(record)
    save(s.out / CHECKPOINT, {
        "epoch": epoch + 1, "wall_s": wall,
        "modules": {k: m.state_dict() for k, m in s.modules.items()},
        "optimizers": {k: o.state_dict() for k, o in s.optimizers.items()},
        "method": s.method.state_dict(), "rng": rng_ranks[0], "rng_ranks": rng_ranks, "log": s.log_records})
    # From the checkpoint's copy: a crash between the two writes leaves a log one epoch
    # short, which a resume (or the next save) rewrites whole.
    _write_log(s)
    log(f"epoch {epoch + 1}/{config.epochs}  " + "  ".join(
        f"{k} {record[k]:.4f}" for k in ("loss_classifier", "acc_clean", "acc_adv", "probe_pgd10") if k in record)
        + f"  ({epoch_s:.1f} s)")


def _finish(s: _Session, epoch: int, stop_reason: str | None, wall: float, log) -> dict:
    """summary.json, with the closing FGSM and PGD check on the test split (rank 0)."""
    config = s.config
    summary = {"epochs_done": config.epochs if not stop_reason else epoch + 1, "train_wall_s": round(wall, 3),
               "stopped": stop_reason}
    if stop_reason and s.procs.main:
        log(stop_reason)
    if s.procs.main:
        summary.update(_flops(config, s.device, s.ds, log))
    if config.eval_pgd_steps and s.procs.main:
        summary["robustness"] = robustness(s.classifier, s.ds, config, s.device, config.progress)
        summary["threat_model"] = (f"white box, test split of {config.dataset} ({len(s.ds.test)} images): "
                                   + "; ".join(a.describe() for _, a in closing_attacks(s.classifier, config)))
    if s.procs.main:
        write_json(s.out / "summary.json", summary)
    return summary


def _flops(config: TrainConfig, device: torch.device, splits: data.DatasetSplits, log) -> dict:
    """The run's training FLOPs (gatfast.train.cost), counted after training on fresh
    networks; a count that fails is reported beside the summary, never instead of it."""
    try:
        return {"train_flops": cost.training_flops(config, device, splits)["total"]}
    except (RuntimeError, TypeError, ValueError) as e:
        log(f"training FLOPs not counted: {type(e).__name__}: {e}")
        return {"train_flops": None, "train_flops_error": f"{type(e).__name__}: {e}"}
