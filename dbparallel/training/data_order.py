"""The order in which one block visits the shared data set.

Each block shuffles with its own seed and sees every row once per epoch. The batch of step s
covers positions [s*batch, (s+1)*batch) of the endless stream perm_0 ++ perm_1 ++ ..., so the
position in the data order is a pure function of the step: resuming needs no saved cursor.
"""

from __future__ import annotations

import torch

from dbparallel.training.seeding import generator


class DataOrder:
    """Row indices of each step's batch for one block."""

    def __init__(self, num_rows: int, batch_size: int, seed: int, block: int):
        if num_rows < 1:
            raise ValueError("the data set is empty (0 rows)")
        self.num_rows, self.batch_size = num_rows, batch_size
        self.seed, self.block = seed, block
        self._cached: tuple[int, torch.Tensor] | None = None

    def permutation(self, epoch: int) -> torch.Tensor:
        if self._cached is None or self._cached[0] != epoch:
            g = generator(self.seed, "data", self.block, epoch)
            self._cached = (epoch, torch.randperm(self.num_rows, generator=g))
        return self._cached[1]

    def indices(self, step: int) -> torch.Tensor:
        """(batch_size,) row indices of ``step``'s batch."""
        start = step * self.batch_size
        parts, filled = [], 0
        while filled < self.batch_size:
            epoch, offset = divmod(start + filled, self.num_rows)
            take = min(self.batch_size - filled, self.num_rows - offset)
            parts.append(self.permutation(epoch)[offset:offset + take])
            filled += take
        return torch.cat(parts)

    def epoch_of(self, step: int) -> float:
        """Epochs completed before ``step``, fractional."""
        return step * self.batch_size / self.num_rows
