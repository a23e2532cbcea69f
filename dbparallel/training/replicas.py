"""The replicas of one block: R processes in one torch.distributed group that train the same
block data-parallel (runtime.replicas_per_block).

Each replica computes its share's loss, scaled by 1/global-batch so that the sum over
replicas is the global batch mean, and the gradients, with that loss, are summed across the
group in one flat all-reduce before clipping and the optimizer step: every replica then sees
the same global loss (and skips a non-finite step together) and applies the same update to
the same weights, so they never drift apart. The group is the block's own (NCCL on
GPUs, gloo on CPUs); nothing crosses to another block.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist

from dbparallel.core.share import Share


class Replicas:
    """This process's place in its block's group of ``world`` replicas."""

    def __init__(self, rank: int, world: int):
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is outside {world} replicas")
        self.rank, self.world = rank, world

    @classmethod
    def from_process_group(cls) -> Replicas | None:
        """The default process group's rank and size (None: no group, or a group of one)."""
        if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() < 2:
            return None
        return cls(dist.get_rank(), dist.get_world_size())

    @property
    def writer(self) -> bool:
        """Rank 0 holds the block's write lease and writes its history and checkpoints."""
        return self.rank == 0

    def share(self, total: int) -> Share:
        return Share.of(self.rank, self.world, total)

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` summed over the replicas (in place; every replica gets the sum)."""
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def sum_gradients(self, params: Iterable[torch.nn.Parameter],
                      extra: torch.Tensor | None = None) -> torch.Tensor | None:
        """Sum every parameter's gradient over the replicas in one flat all-reduce (a missing
        gradient counts as zero, so every replica sends the same layout). ``extra`` values
        (the step's loss) ride in the same all-reduce; their sums are returned."""
        params = [p for p in params if p.requires_grad]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        parts = [g.reshape(-1) for g in grads]
        if extra is not None:
            dtype = parts[0].dtype if parts else extra.dtype
            parts.append(extra.detach().reshape(-1).to(dtype))
        if not parts:
            return None
        flat = self.sum(torch.cat(parts))
        offset = 0
        for p, g in zip(params, grads, strict=True):
            n = g.numel()
            p.grad = flat[offset:offset + n].view_as(g).to(g.dtype)
            offset += n
        return flat[offset:] if extra is not None else None
