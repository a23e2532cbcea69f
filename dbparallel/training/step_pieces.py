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
from dbparallel.tasks.base import Batch, Draws, Task
from dbparallel.training.seeding import generator

Piece = tuple[Batch, Share | None]  # rows and their place in the global batch


def rows_of(batch: Batch) -> int:
    """The number of rows of ``batch``."""
    return len(next(iter(batch.values())))


def share_draws(task: Task, block: int, batch: Batch, share: Share | None,
                generator: torch.Generator) -> Draws:
    """``share``'s rows (None: all of ``batch``) of the draws for the global batch, made from
    ``generator`` on its device and moved to ``batch``'s. A share's rows are copied, so that
    the rest of the global batch's draws is freed at once."""
    share = share or Share.whole(rows_of(batch))
    device = next(iter(batch.values())).device
    draws = task.draw(block, batch, share.total, generator)
    return {k: v.to(device) if share.is_whole else share.cut(v).to(device, copy=True)
            for k, v in draws.items()}


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
