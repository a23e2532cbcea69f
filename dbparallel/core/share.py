"""One replica's share of a block's global batch.

A block trained data-parallel on R replicas keeps ``train.batch_size`` as its global batch:
replica r takes rows [start, stop) of it. Every random draw of the loss (noise levels, noise,
masks, dropped labels) is made for all ``total`` rows from the step's generator and cut to the
share, so the R replicas together draw exactly what one process draws for the whole batch, and
R replicas reproduce one up to the order of floating-point sums.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Share:
    """Rows [start, stop) of a global batch of ``total`` rows."""

    start: int
    stop: int
    total: int

    @classmethod
    def whole(cls, total: int) -> Share:
        """The whole batch: one process, no replicas."""
        return cls(0, total, total)

    @classmethod
    def of(cls, rank: int, replicas: int, total: int) -> Share:
        """Replica ``rank``'s contiguous share of ``total`` rows split as evenly as possible
        (the first ``total % replicas`` replicas take one row more)."""
        if not 0 <= rank < replicas:
            raise ValueError(f"rank {rank} is outside {replicas} replicas")
        base, extra = divmod(total, replicas)
        start = rank * base + min(rank, extra)
        return cls(start, start + base + (rank < extra), total)

    @property
    def rows(self) -> int:
        return self.stop - self.start

    @property
    def is_whole(self) -> bool:
        return self.start == 0 and self.stop == self.total

    def split(self, pieces: int) -> list[Share]:
        """These rows cut into ``pieces`` contiguous shares of the same global batch, as
        evenly as possible (train.micro_batches; empty ones left out)."""
        parts = (Share.of(i, pieces, self.rows) for i in range(pieces))
        return [Share(self.start + p.start, self.start + p.stop, self.total)
                for p in parts if p.rows]

    def cut(self, x: torch.Tensor) -> torch.Tensor:
        """This share's rows of ``x`` (dim 0 has ``total`` rows)."""
        return x if self.is_whole else x[self.start:self.stop]
