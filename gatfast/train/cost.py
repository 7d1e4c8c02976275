"""Training cost in floating-point operations: a measure of a run's cost that holds on any
hardware, where its wall time holds on one machine.

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
"""

from __future__ import annotations

import dataclasses

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from gatfast.ops import backends
from gatfast.train import data
from gatfast.train.build import build_classifier, build_method
from gatfast.train.config import TrainConfig

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
