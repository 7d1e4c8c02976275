"""Training cost in floating-point operations, a measure of a run's cost that holds on any
hardware, and in seconds on this machine, measured for many runs at once in turns.

`training_flops(config)` counts with the FLOP formulas of torch.utils.flop_counter (its
registry, the one FlopCounterMode uses), which cover the matrix products and convolutions
(forward and backward) that dominate a step: the classifier's, the generator's and every
attack step's inside a training step, and the work a method does after each epoch
(fgsm_rs's PGD-10 probe). Elementwise work (activations, projections, gatfast's fused
elementwise ops) has no formula and is not counted. FlopCounterMode itself cannot serve:
its module tracker fails under torch.autograd.grad with respect to an input
(pytorch/pytorch#131753), which every attack step does, so a dispatch mode of a few lines
applies the same formulas without tracking modules.

The count runs on freshly built networks of the run's config (on the CPU unless told
otherwise) with the plain PyTorch backend, never on the run itself: nothing about training changes, and a finished
run's cost can be counted afterwards from its config.json. A step's count depends on its
batch size (linearly: every counted op is) and on the method's phase (`Method.cost_key`:
CROWN-IBP drops its linear bound once beta reaches 0), not on the weights or the data, so
each distinct phase is counted once, on a small batch, and scaled by the examples each
epoch sees.

`training_seconds(configs)` times the same steps instead: a study's runs train on whatever
machine is free when their turn comes, and their own wall times then compare machines, not
methods (the mnist5k study's GAT seeds took 392 s on one "AMD EPYC" host and 679 s on
another). So each config's steps, at its real batch size and on its real device, and its
epoch's end are timed with the other configs' in turns, round by round, on one machine in
one run, as the step benchmark does, and the median round of each is scaled up to the
whole schedule. Checkpoint writes and logging (milliseconds an epoch) are not timed.
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from gatfast.ops import backends
from gatfast.train import data
from gatfast.train.build import build_classifier, build_method
from gatfast.train.config import TrainConfig, resolve_device

COUNT_BATCH = 16  # examples per counted step (the count is linear in the batch)


def training_flops(config: TrainConfig, device="cpu", splits: data.DatasetSplits | None = None) -> dict:
    """{"total": FLOPs of the whole run, "per_epoch": [...], "per_example": FLOPs of one
    example's step in each epoch, "counted": what the count covers}. `splits`: the run's
    dataset, when the caller has it loaded (else loaded from the config)."""
    config.validate()
    ds = splits if splits is not None else data.load_dataset(config.dataset, config.data_root, config.download)
    x, y = ds.train.tensors
    n = min(config.train_size or len(y), len(y))
    # the engine drops the last partial batch under a CUDA graph (one captured shape)
    examples = n // config.batch_size * config.batch_size if config.cuda_graph else n
    config = dataclasses.replace(config, device=str(device), backend="torch", cuda_graph=False, amp=None,
                                 progress=False)
    batch = min(COUNT_BATCH, n)
    device = torch.device(device)
    forked = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=forked), backends.use_backend("torch"):
        torch.manual_seed(config.seed)
        x, y = x.to(device), y.to(device)
        xb, yb = x[:batch], y[:batch]
        classifier = build_classifier(config, ds).to(device)
        probe = (x[:256], y[:256]) if config.method == "fgsm_rs" else None
        method = build_method(config, classifier, ds, probe)
        by_phase, per_example, per_epoch = {}, [], []
        for epoch in range(config.epochs):
            method.set_eps(config.eps_at(epoch + 0.5))
            key = method.cost_key()
            if key not in by_phase:  # a step's FLOPs per example, and the epoch's end (a fixed probe)
                by_phase[key] = (_count(lambda: method.step(xb, yb)) / batch,
                                 _count(lambda: method.end_epoch(epoch + 1)))
            step, end = by_phase[key]
            per_example.append(step)
            per_epoch.append(step * examples + end)
    return {"total": float(sum(per_epoch)), "per_epoch": per_epoch, "per_example": per_example,
            "counted": "matrix products and convolutions, forward and backward (torch.utils.flop_counter), "
                       "of every training step and each epoch's end; elementwise work is not counted"}


def training_seconds(configs: dict, *, rounds: int = 5, steps: int = 3, warmup: int = 1, log=None) -> dict:
    """Each config's training wall time on this machine: {name: {"epoch_s": seconds of each
    epoch of its schedule, "total_s", "step_s": {phase: median seconds of one step},
    "end_s": median seconds of an epoch's end, "steps_per_epoch"}}. The configs' steps run
    in turns: per round, `steps` steps of each phase of each config, then its epoch's end;
    `warmup` untimed steps of each first (allocation, autotuning, graph capture)."""
    for what, value, least in (("rounds", rounds, 1), ("steps", steps, 1), ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{what} must be an integer >= {least}, got {value!r}")
    if not configs:
        raise ValueError("configs is empty: nothing to time")
    timed = {name: _Timed(config) for name, config in configs.items()}
    for t in timed.values():
        for phase in t.phases:
            t.run_steps(phase, warmup)
    step_s = {name: {phase: [] for phase in t.phases} for name, t in timed.items()}
    end_s = {name: [] for name in timed}
    for r in range(rounds):
        for name, t in timed.items():
            for phase in t.phases:
                step_s[name][phase].append(t.run_steps(phase, steps) / steps)
            end_s[name].append(t.run_end())
        if log:
            log(f"  timing round {r + 1}/{rounds} done")
    out = {}
    for name, t in timed.items():
        per_step = {phase: statistics.median(v) for phase, v in step_s[name].items()}
        end = statistics.median(end_s[name])
        epoch_s = [t.steps_per_epoch * per_step[phase] + end for phase in t.epoch_phases]
        out[name] = {"epoch_s": epoch_s, "total_s": float(sum(epoch_s)), "end_s": end,
                     "step_s": {str(p): s for p, s in per_step.items()}, "steps_per_epoch": t.steps_per_epoch,
                     "device": str(t.device)}
    return out


class _Timed:
    """One config's method, built as the engine builds it, ready to time: its phases (each
    with the eps of its first epoch) and a few real training batches on its device."""

    def __init__(self, config: TrainConfig):
        config.validate()
        self.config, self.device = config, resolve_device(config.device)
        ds = data.load_dataset(config.dataset, config.data_root, config.download)
        x, y = ds.train.tensors
        n = min(config.train_size or len(y), len(y))
        examples = n // config.batch_size * config.batch_size if config.cuda_graph else n
        # the last, partial batch costs its share of a full one
        self.steps_per_epoch = examples / config.batch_size
        batch = min(config.batch_size, n)
        forked = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=forked), backends.use_backend(config.backend):
            torch.manual_seed(config.seed)
            order = torch.randperm(n)[:2 * batch]
            x, y = x[order].to(self.device), y[order].to(self.device)
            self.batches = [(x[i:i + batch], y[i:i + batch]) for i in range(0, len(y) - batch + 1, batch)]
            classifier = build_classifier(config, ds).to(self.device)
            probe = (x[:256], y[:256]) if config.method == "fgsm_rs" else None
            self.method = build_method(config, classifier, ds, probe)
        for module in self.method.modules().values():
            module.train()
        self.eps, self.epoch_phases = {}, []
        for epoch in range(config.epochs):
            self.method.set_eps(config.eps_at(epoch + 0.5))
            phase = self.method.cost_key()
            self.eps.setdefault(phase, config.eps_at(epoch + 0.5))
            self.epoch_phases.append(phase)
        self.phases = list(self.eps)
        self._done = 0

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def run_steps(self, phase, count: int) -> float:
        """Seconds of `count` training steps in `phase`."""
        self.method.set_eps(self.eps[phase])
        with backends.use_backend(self.config.backend):
            self._sync()
            start = time.perf_counter()
            for _ in range(count):
                xb, yb = self.batches[self._done % len(self.batches)]
                self.method.step(xb, yb)
                self._done += 1
            self._sync()
            return time.perf_counter() - start

    def run_end(self) -> float:
        """Seconds of an epoch's end (fgsm_rs's PGD-10 probe; nothing for most methods)."""
        self.method.set_eps(self.eps[self.epoch_phases[-1]])
        with backends.use_backend(self.config.backend):
            self._sync()
            start = time.perf_counter()
            self.method.end_epoch(1)
            self._sync()
            return time.perf_counter() - start


def _count(work) -> int:
    with _FlopCount() as counter:
        work()
    return counter.flops


class _FlopCount(TorchDispatchMode):
    """Every dispatched op with a formula in torch's FLOP registry, summed."""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.flops += int(formula(*args, **kwargs, out_val=out))
        return out
