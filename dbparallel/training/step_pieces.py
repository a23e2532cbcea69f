"""A step's pieces (``train.micro_batches``) and their random draws.

Every random draw of a block's loss is made for the step's global batch, on the block's device,
from a generator seeded by (run.seed, purpose, block, step): the draws are the same on every
replica and after every resume, and cheap where the block runs (no host tensors, no copies to
the device). Each piece (a replica's share, or a part of it) keeps a copy of its own rows and
lets the rest go at once, so that only its own noise is alive while it runs: a step in k pieces
draws k times, a small cost on a GPU beside the arithmetic, for the memory of one piece. The
loss itself (``Task.loss_on``) draws nothing, so a compiled step is one graph.
"""

from __future__ import annotations

import torch

from dbparallel.core.share import Share
from dbparallel.tasks.base import Batch, Draws, Task, rows_of, share_draws
from dbparallel.training.seeding import generator

Piece = tuple[Batch, Share | None]  # rows and their place in the global batch


def pieces(batch: Batch, share: Share | None, k: int) -> list[Piece]:
    """``batch`` (``share``'s rows, None: the whole batch) cut into ``k`` contiguous pieces as
    even as possible, each with its rows' place in the global batch, so that the pieces'
    summed losses are the batch's."""
    if k == 1:
        return [(batch, share)]
    whole = share or Share.whole(rows_of(batch))
    return [({key: v[p.start - whole.start:p.stop - whole.start] for key, v in batch.items()}, p)
            for p in whole.split(k)]


def planned_draws(task: Task, block: int, batch: Batch, device: str, seed: int) -> Draws:
    """The loss's draws for ``batch`` in a plan's step: made on a real ``device``; on the meta
    device, their shapes only (one row drawn on the CPU gives them), so that planning a large
    text model does not draw batch x seq_len x width numbers on the host."""
    if torch.device(device).type != "meta":
        return share_draws(task, block, batch, None, generator(seed, "plan", device=device))
    one = task.draw(block, {k: v[:1] for k, v in batch.items()}, 1, generator(seed, "plan"))
    return {k: v.new_empty((rows_of(batch), *v.shape[1:]), device=device)
            for k, v in one.items()}
