"""What every task provides: the blocks, the per-sample loss, and generation from the chain."""

from __future__ import annotations

from typing import Protocol

import pyarrow as pa
import torch

from dbparallel.config import Config
from dbparallel.core.noise import LogNormalNoise
from dbparallel.core.partition import Partition, gaussian_partition
from dbparallel.core.share import Share
from dbparallel.models.block import Block

Batch = dict[str, torch.Tensor]


class Task(Protocol):
    """A DiffusionBlocks task: what is denoised, what conditions it, and how it is scored."""

    name: str
    partition: Partition
    columns: list[str] | None  # the data columns a batch needs (None: the shard's only one)

    def build_block(self, block: int) -> Block:
        """A freshly initialised block network (its private stem, layers and head)."""
        ...

    def decode(self, rows: pa.Table, device: str | torch.device = "cpu") -> Batch:
        """Validated tensors of some rows (a batch) on ``device``, indexed along dim 0;
        RowError names the first bad row."""
        ...

    def example_batch(self, n: int, device: str | torch.device) -> Batch:
        """A batch of ``n`` rows with the right shapes and dtypes (values are placeholders);
        on the meta device it costs nothing (memory estimates, benchmarks)."""
        ...

    def loss(
        self, net: Block, batch: Batch, block: int, generator: torch.Generator,
        share: Share | None = None,
    ) -> torch.Tensor:
        """Per-sample loss (N,) of ``net`` on noise levels drawn from ``block``'s range.
        ``batch`` holds ``share``'s rows of the step's global batch (default: all of it); the
        random draws are made for the global batch and cut to the share (core/share.py)."""
        ...


def gaussian_noise(cfg: Config) -> tuple[LogNormalNoise, Partition]:
    """The EDM training noise of ``cfg`` and its partition into blocks (noise.partition)."""
    n = cfg.noise
    noise = LogNormalNoise(n.P_mean, n.P_std, n.sigma_min, n.sigma_max)
    return noise, gaussian_partition(n.partition, noise, cfg.model.blocks, n.gamma)
