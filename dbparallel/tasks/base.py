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
# A loss's random draws (noise levels, noise, masks, dropped labels, flips): dim 0 is rows
Draws = dict[str, torch.Tensor]
Rows = dict[str, torch.Tensor]  # checked rows in compact form on the CPU, indexed along dim 0


class Task(Protocol):
    """A DiffusionBlocks task: what is denoised, what conditions it, and how it is scored."""

    name: str
    partition: Partition
    columns: list[str] | None  # the data columns a batch needs (None: the shard's only one)

    def build_block(self, block: int) -> Block:
        """A freshly initialised block network (its private stem, layers and head)."""
        ...

    def unpack(self, rows: pa.Table) -> Rows:
        """Every row of ``rows`` checked and held compactly on the CPU (8-bit pixels, integer
        ids; encoded images decoded); RowError names the first bad row. A block's stream
        unpacks each window of the data once, in its reading thread."""
        ...

    def to_device(self, rows: Rows, device: str | torch.device) -> Batch:
        """The batch of some unpacked rows: new tensors on ``device`` in the dtypes the blocks
        take (pixels become floats there)."""
        ...

    def decode(self, rows: pa.Table, device: str | torch.device = "cpu") -> Batch:
        """``to_device(unpack(rows), device)``."""
        ...

    def example_batch(self, n: int, device: str | torch.device) -> Batch:
        """A batch of ``n`` rows with the right shapes and dtypes (values are placeholders);
        on the meta device it costs nothing (memory estimates, benchmarks)."""
        ...

    def inference_blocks(self) -> list[int]:
        """The blocks the config's sampler runs, in the order it runs them: a block it never
        runs trains for nothing (``unused_blocks_warning``)."""
        ...

    def draw(self, block: int, batch: Batch, total: int, generator: torch.Generator) -> Draws:
        """Every random draw of the loss for a global batch of ``total`` rows shaped like
        ``batch`` (its rows' other dimensions), made on the generator's device, in a fixed
        order that starts with the noise levels (``noise.sample``), so a fresh generator gives
        a step's levels again without the rest."""
        ...

    def loss_on(self, net: Block, batch: Batch, block: int, draws: Draws) -> torch.Tensor:
        """Per-sample loss (N,) of ``net`` on ``batch`` given ``draws`` cut to its rows and on
        its device: no random draw of its own, so one step compiles to whole graphs. What it
        computes depends on ``block`` only through ``net`` and ``draws``: a plan counts the
        step of blocks whose networks and draws are alike once (training/plan.py)."""
        ...

    def loss(
        self, net: Block, batch: Batch, block: int, generator: torch.Generator,
        share: Share | None = None,
    ) -> torch.Tensor:
        """``loss_on`` with draws made from ``generator``. ``batch`` holds ``share``'s rows
        of the step's global batch (default: all of it); the random draws are made for the
        global batch and cut to the share (core/share.py)."""
        ...


class Decoding:
    """``decode`` for a task that has ``unpack`` and ``to_device``."""

    def decode(self, rows: pa.Table, device: str | torch.device = "cpu") -> Batch:
        return self.to_device(self.unpack(rows), device)  # type: ignore[attr-defined]


def rows_of(batch: Batch) -> int:
    """The number of rows of ``batch``."""
    return len(next(iter(batch.values())))


def share_draws(task: Task, block: int, batch: Batch, share: Share | None,
                generator: torch.Generator) -> Draws:
    """``share``'s rows (None: all of ``batch``) of ``task``'s draws for the global batch,
    made from ``generator`` on its device and moved to ``batch``'s. A share's rows are
    copied, so that the rest of the global batch's draws is freed at once."""
    share = share or Share.whole(rows_of(batch))
    device = next(iter(batch.values())).device
    draws = task.draw(block, batch, share.total, generator)
    return {k: v.to(device) if share.is_whole else share.cut(v).to(device, copy=True)
            for k, v in draws.items()}


class Drawing:
    """``loss`` for a task that has ``draw`` and ``loss_on``."""

    def loss(self, net: Block, batch: Batch, block: int, generator: torch.Generator,
             share: Share | None = None) -> torch.Tensor:
        draws = share_draws(self, block, batch, share, generator)  # type: ignore[arg-type]
        return self.loss_on(net, batch, block, draws)  # type: ignore[attr-defined]


def gaussian_noise(cfg: Config) -> tuple[LogNormalNoise, Partition]:
    """The EDM training noise of ``cfg`` and its partition into blocks (noise.partition)."""
    n = cfg.noise
    noise = LogNormalNoise(n.P_mean, n.P_std, n.sigma_min, n.sigma_max)
    return noise, gaussian_partition(n.partition, noise, cfg.model.blocks, n.gamma)
