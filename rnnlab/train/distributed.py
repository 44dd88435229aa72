"""Data-parallel training across processes started by ``torchrun`` (gloo on CPU, nccl on GPU).

Each rank holds a full model copy wrapped in ``DistributedDataParallel``; tasks shard every
global batch by rank, DDP averages the gradients, so equal shards give exactly the gradient of
the global mean loss — the same training as one process with the same global batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: str = "cpu"  # where collectives run: the GPU for nccl

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, cuda: bool = False) -> Dist:
        """Join the process group when started by torchrun (``WORLD_SIZE`` > 1): nccl when the
        model lives on a GPU, gloo on the CPU."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group("nccl" if cuda else "gloo")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        return cls(dist.get_rank(), dist.get_world_size(), f"cuda:{local}" if cuda else "cpu")

    def wrap(self, model: nn.Module) -> nn.Module:
        if self.world == 1:
            return model
        dev = next(model.parameters()).device
        ids = [dev.index] if dev.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def mean(self, value: float) -> float:
        """The mean of a scalar over ranks."""
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t.item()) / self.world

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on at least one (keeps stop decisions in step)."""
        if self.world == 1:
            return flag
        t = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def gather(self, t: Tensor, dim: int) -> Tensor:
        """Concatenate each rank's ``t`` along ``dim`` (rank order)."""
        if self.world == 1:
            return t
        t = t.to(self.device).contiguous()
        parts = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(parts, t)
        return torch.cat(parts, dim).cpu()

    def shard(self, t: Tensor, dim: int) -> Tensor:
        """This rank's equal slice of ``t`` along ``dim`` (inverse of ``gather``)."""
        if self.world == 1:
            return t
        size = t.shape[dim]
        if size % self.world:
            raise ValueError(f"batch_size: expected a multiple of the {self.world} processes, got {size}")
        n = size // self.world
        return t.narrow(dim, self.rank * n, n)

    def close(self) -> None:
        """Leave the process group once every rank is done with it.

        The barrier matters: gloo's worker threads release a finished collective's tensors a moment
        after ``wait`` returns, and that release needs the GIL. A rank that raced ahead into
        interpreter shutdown aborted there ("terminate called without an active exception").
        """
        if self.world > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
