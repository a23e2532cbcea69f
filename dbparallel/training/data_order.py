"""The order in which one block visits the shared data set, one window of shards at a time.

Every block sees every row once per epoch, in its own order, holding only a window of
``data.window_shards`` shards: epoch e visits the shards in a permutation drawn from
(seed, block, e), cut into consecutive windows, and visits the rows of window w in a
permutation drawn from (seed, block, e, w). The batch of step s covers positions
[s*batch, (s+1)*batch) of the endless stream epoch_0 ++ epoch_1 ++ ..., so the position is a
pure function of the step: a resumed block computes which window its next batch lies in and
reads only that window, never the epoch before it. A data set that fits one window is a plain
row permutation per epoch.

A block resumed with another ``train.batch_size`` goes on from the position its checkpoint
recorded (``rebase``): step s then covers [p0 + (s-s0)*batch, ...) from the checkpoint's step
s0 and position p0, so no row of the epoch is skipped or seen twice.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np
import torch

from dbparallel.training.seeding import generator


@dataclass(frozen=True)
class Segment:
    """Part of a batch that lies in one window: ``rows`` index the window's rows (its shards'
    rows concatenated in window order)."""

    epoch: int
    window: int
    rows: np.ndarray  # (n,) int64


class DataOrder:
    """Which rows of which window each step's batch holds, for one block."""

    def __init__(self, shard_rows: list[int], batch_size: int, seed: int, block: int,
                 window_shards: int):
        self.shard_rows = [int(n) for n in shard_rows]
        self.num_rows = sum(self.shard_rows)
        if self.num_rows < 1:
            raise ValueError("the data set is empty (0 rows)")
        self.batch_size, self.seed, self.block = batch_size, seed, block
        self.window_shards = window_shards
        self._epoch: tuple[int, list[np.ndarray], list[int]] | None = None
        self._rows: tuple[tuple[int, int], np.ndarray] | None = None
        self.origin = (0, 0)  # (step, its position): positions advance a batch a step from it

    def rebase(self, step: int, position: int) -> None:
        """Go on from ``position`` at ``step`` (a resume whose batch size changed)."""
        if step < 0 or position < 0:
            raise ValueError(f"a data position is >= 0 (step {step}, position {position})")
        self.origin = (step, position)

    def position(self, step: int) -> int:
        """The position in the stream of epochs where ``step``'s batch starts."""
        s0, p0 = self.origin
        if step < s0:
            raise ValueError(f"step {step} comes before step {s0}, where this block's data "
                             f"order went on at position {p0:,} (a resumed batch size)")
        return p0 + (step - s0) * self.batch_size

    def windows(self, epoch: int) -> tuple[list[np.ndarray], list[int]]:
        """The shard ids of each window of ``epoch`` and each window's first position."""
        if self._epoch is None or self._epoch[0] != epoch:
            g = generator(self.seed, "shards", self.block, epoch)
            order = torch.randperm(len(self.shard_rows), generator=g).numpy()
            windows = [order[i:i + self.window_shards]
                       for i in range(0, len(order), self.window_shards)]
            sizes = [sum(self.shard_rows[s] for s in w) for w in windows]
            starts = np.cumsum([0] + sizes[:-1]).tolist()
            self._epoch = (epoch, windows, starts)
        return self._epoch[1], self._epoch[2]

    def window_permutation(self, epoch: int, window: int) -> np.ndarray:
        """The visiting order of the rows of one window."""
        if self._rows is None or self._rows[0] != (epoch, window):
            size = sum(self.shard_rows[s] for s in self.windows(epoch)[0][window])
            g = generator(self.seed, "data", self.block, epoch, window)
            self._rows = ((epoch, window), torch.randperm(size, generator=g).numpy())
        return self._rows[1]

    def segments(self, step: int) -> list[Segment]:
        """The rows of ``step``'s batch, window by window, in batch order."""
        start, filled, out = self.position(step), 0, []
        while filled < self.batch_size:
            epoch, offset = divmod(start + filled, self.num_rows)
            _, starts = self.windows(epoch)
            window = bisect.bisect_right(starts, offset) - 1
            end = starts[window + 1] if window + 1 < len(starts) else self.num_rows
            take = min(self.batch_size - filled, end - offset)
            local = offset - starts[window]
            rows = self.window_permutation(epoch, window)[local:local + take]
            out.append(Segment(epoch, window, rows))
            filled += take
        return out

    def next_window(self, epoch: int, window: int) -> tuple[int, int]:
        """The window visited after (epoch, window)."""
        windows, _ = self.windows(epoch)
        return (epoch, window + 1) if window + 1 < len(windows) else (epoch + 1, 0)

    def shards_of(self, epoch: int, window: int) -> list[int]:
        """Shard ids of a window, in the order their rows are concatenated."""
        return [int(s) for s in self.windows(epoch)[0][window]]
