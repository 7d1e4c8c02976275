"""Training under torchrun (WORLD_SIZE > 1): each process trains on its shard of every
global batch, and gradients are averaged with all_reduce before the optimisers step,
which is what DistributedDataParallel does; gatfast does it itself because the GAT step
differentiates with torch.autograd.grad and two forwards, which DDP's reducer does not
follow. Rank 0 writes the run folder; BatchNorm buffers are taken from rank 0 after
each epoch. NCCL on GPUs, gloo on CPUs."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Processes:
    """This process's place among the torchrun processes (one process: rank 0 of 1)."""
    rank: int = 0
    world: int = 1
    owns_group: bool = False   # init() opened the process group, so close() ends it

    @property
    def main(self) -> bool:
        return self.rank == 0

    def close(self) -> None:
        if self.owns_group:
            dist.destroy_process_group()

    def all_agree(self, finite: torch.Tensor) -> bool:
        """The engine's step guard: step only when the loss is finite on every process
        (all skip together, or none does)."""
        ok = finite.to(torch.int32)
        if self.world > 1:
            dist.all_reduce(ok, op=dist.ReduceOp.MIN)
        return bool(ok)

    def broadcast_parameters(self, modules) -> None:
        """Every process starts from rank 0's weights."""
        for m in modules:
            for p in m.parameters():
                dist.broadcast(p.data, 0)

    def sync_buffers(self, modules) -> None:
        """BatchNorm's running statistics (and any buffer) from rank 0."""
        for m in modules:
            for b in m.buffers():
                dist.broadcast(b, 0)

    def gather(self, obj) -> list:
        """Every process's `obj`, in rank order (on every process)."""
        if self.world == 1:
            return [obj]
        gathered = [None] * self.world
        dist.all_gather_object(gathered, obj)
        return gathered

    def mean_record(self, record: dict) -> dict:
        """An epoch's metrics averaged over the processes."""
        values = torch.tensor([record.get(k, 0.0) for k in sorted(record)], dtype=torch.float64)
        dist.all_reduce(values)
        return dict(zip(sorted(record), (values / self.world).tolist()))


def init(device_name: str) -> Processes:
    """Join the torchrun process group (opening it when nobody has), or a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Processes()
    owns = not dist.is_initialized()
    if owns:
        backend = "nccl" if device_name != "cpu" and torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return Processes(dist.get_rank(), dist.get_world_size(), owns)


def average_gradients(modules, share: float) -> None:
    """Gradients of each process's mean loss, weighted by its share of the global batch and
    summed: the gradient of the global batch's mean loss, whatever the shard sizes."""
    grads = [p.grad for m in modules for p in m.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads]) * share
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset: offset + g.numel()].view_as(g))
        offset += g.numel()
