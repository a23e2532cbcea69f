"""Where a composed network loses quality: its training loss per noise level, block by block.

The noise range is cut into bins of equal probability mass (for text diffusion, of masking
time t; with ``noise.partition=log_uniform``, of equal widths in ln sigma, so that the bins
still nest in the blocks' ranges): at least ``BINS``, a whole number per block, so a run and
its end-to-end baseline are scored on about the same bins. Each bin is scored by the block
that owns it, on held-out rows, with sigma drawn inside the bin with fixed noise: ``loss`` is
the task's training loss (weighted by w(sigma)), ``unweighted_loss`` the same per sample
divided by its w(sigma) (the denoising error: MSE for DiT, cross-entropy for ViT and AR, the
masked tokens' cross-entropy per token of a row for MDM). The sigma of each sample is the
task's own first draw, made again from a copy of the same generator.
A block whose bins sit above its neighbours', or above the end-to-end network's at the same
noise level (the ``dbparallel baseline`` run's diagnostics.json), is the one that limits the
network. ViT also reports the accuracy of the readout after each step of its chain.

Written as diagnostics.json at the final assembly and drawn in curves.png.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from dbparallel.config import Config
from dbparallel.core.partition import Partition, gaussian_partition, uniform_time_partition
from dbparallel.core.precond import edm_weight
from dbparallel.data.shards import DataIndex
from dbparallel.data.split_reader import iter_chunks
from dbparallel.errors import RowError
from dbparallel.models.block import Block
from dbparallel.tasks import Task
from dbparallel.tasks.augment import unaugmented
from dbparallel.tasks.base import Batch, rows_of
from dbparallel.training.seeding import generator

BINS = 16  # at least; a whole number per block, so that no bin straddles two blocks
FILE = "diagnostics.json"


def bins(cfg: Config, task: Task) -> Partition:
    """The diagnostic bins: of the run's partition kind, without overlap, a whole number per
    block."""
    blocks = cfg.model.blocks
    count = blocks * math.ceil(BINS / blocks)
    if cfg.task == "mdm":
        return uniform_time_partition(task.noise, count)  # type: ignore[attr-defined]
    noise = task.noise  # type: ignore[attr-defined]
    return gaussian_partition(cfg.noise.partition, noise, count)


def applies(cfg: Config) -> bool:
    """Whether the network is a chain of denoisers (not a plain classifier, causal LM or
    BPTT-trained looped core)."""
    return not (cfg.train.objective == "end_to_end" and cfg.task in ("vit", "ar", "looped"))


@torch.no_grad()
def loss_by_noise(cfg: Config, task: Task, nets: list[Block], batch: Batch) -> list[dict]:
    """Per bin, highest noise first: its range, owning block and mean training loss."""
    fine = bins(cfg, task)
    binned = unaugmented(task)  # a copy: held-out rows as they are
    binned.partition = fine  # the task's loss draws its noise from ranges[k]: bin k
    out = []
    rows = rows_of(batch)
    for k in range(fine.blocks):
        lo, hi = fine.ranges[k]
        mid = math.sqrt(lo * hi) if cfg.task != "mdm" else (lo + hi) / 2
        owner = task.partition.owner(mid)
        g = generator(cfg.run.seed, "diagnostics", k)
        again = torch.Generator().set_state(g.get_state())
        loss = binned.loss(nets[owner], batch, k, g).float()  # (N,)
        sigma = task.noise.sample(rows, lo, hi, again)  # type: ignore[attr-defined]
        w = _weight(cfg, task, sigma).to(loss.device)
        out.append({"lo": lo, "hi": hi, "block": owner, "loss": float(loss.mean()),
                    "unweighted_loss": float((loss / w).mean())})
    return out


def _weight(cfg: Config, task: Task, sigma: torch.Tensor) -> torch.Tensor:
    """The task's per-sample loss weight at noise level ``sigma`` (N,)."""
    if cfg.task == "mdm":
        return task.noise.weight(sigma)  # type: ignore[attr-defined]
    return edm_weight(sigma, task.sigma_data)  # type: ignore[attr-defined]


@torch.no_grad()
def chain_accuracy(cfg: Config, task: Task, nets: list[Block], batch: Batch) -> list[dict]:
    """ViT: the accuracy of the readout (argmax of the logits) after each step of the chain,
    with the block that ran it."""
    steps = task.predict_steps(nets, batch["image"],  # type: ignore[attr-defined]
                               generator(cfg.run.seed, "diagnostics-chain"))
    labels = batch["label"]
    return [{"step": i, "sigma": sigma, "block": block,
             "accuracy": float((logits.argmax(1) == labels).double().mean())}
            for i, (sigma, block, logits) in enumerate(steps)]


def held_out_batch(task: Task, index: DataIndex, device: str | torch.device, rows: int,
                   split: str | None = None) -> Batch:
    """The first ``rows`` rows of ``split`` (default: DataIndex.eval_split), decoded on
    ``device``."""
    split = split or index.eval_split
    part = next(iter_chunks(index, split, rows, task.columns, rows))
    try:
        return task.decode(part.table, device)
    except RowError as err:
        raise err.at(part.where(err.row)) from None


def diagnose(cfg: Config, task: Task, nets: list[Block], batch: Batch) -> dict[str, Any]:
    """diagnostics.json: the loss per noise bin and, for ViT, the chain's accuracy."""
    if not applies(cfg):
        return {"loss_by_noise": [], "note": "an end-to-end classifier or causal LM has no "
                                             "noise levels"}
    out: dict[str, Any] = {"noise": "t" if cfg.task == "mdm" else "sigma",
                           "rows": rows_of(batch),
                           "loss_by_noise": loss_by_noise(cfg, task, nets, batch)}
    if cfg.task == "vit":
        out["chain_accuracy"] = chain_accuracy(cfg, task, nets, batch)
    return out
