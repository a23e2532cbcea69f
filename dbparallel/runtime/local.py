"""Local mode: the same block trainers, one after another in this process, without Ray."""

from __future__ import annotations

import time
from typing import Any

import pyarrow as pa
import torch

from dbparallel.config import Config
from dbparallel.errors import UserError
from dbparallel.runtime.progress import BlockBars
from dbparallel.training.assemble import assemble
from dbparallel.training.loop import BlockRun
from dbparallel.training.report import build_report, write_report
from dbparallel.training.run_dir import open_run


def run_local(cfg: Config, table: pa.Table, progress: bool | None = None) -> dict[str, Any]:
    """Train every block, assemble, write report.json; returns the report."""
    start = time.perf_counter()
    torch.set_num_threads(cfg.runtime.torch_threads)
    storage = open_run(cfg)
    device = "cpu"
    if cfg.runtime.gpus_per_block > 0:
        if not torch.cuda.is_available():
            raise UserError("runtime.gpus_per_block: no CUDA device here; set it to 0 for CPU")
        device = "cuda"
    bars = BlockBars(cfg.model.blocks, cfg.train.steps, progress)
    per_block = []
    try:
        for b in range(cfg.model.blocks):
            run = BlockRun(cfg, b, table, storage, device)
            bars.update(b, run.trainer.step)
            run.train_until(cfg.train.steps, lambda s, b=b: bars.update(b, s.step, s.loss))
            per_block.append(run.summary())
    finally:
        bars.close()
    metrics = assemble(cfg, storage, table, device)
    report = build_report(cfg, per_block, metrics, time.perf_counter() - start)
    write_report(storage, report)
    return report
