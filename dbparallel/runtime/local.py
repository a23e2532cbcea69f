"""Local mode: the same block trainers, one after another in this process, without Ray."""

from __future__ import annotations

import time
from typing import Any

import pyarrow as pa
import torch

from dbparallel.config import Config
from dbparallel.errors import UserError
from dbparallel.runtime.metrics import (
    AssemblyRecorder,
    BlockRecorder,
    MemorySink,
    PrometheusSink,
    Sink,
    check_port_free,
)
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
    sink: Sink = MemorySink()
    server = None
    if cfg.metrics.port:
        check_port_free(cfg.metrics.port)
        sink = PrometheusSink()
        server = sink.serve(cfg.metrics.port)
        print(f"metrics: http://127.0.0.1:{cfg.metrics.port}/metrics", flush=True)
    bars = BlockBars(cfg.model.blocks, cfg.train.steps, progress)
    per_block = []
    try:
        for b in range(cfg.model.blocks):
            run = BlockRun(cfg, b, table, storage, device)
            recorder = BlockRecorder(cfg.run.name, b, run.trainer.sigma_range, sink)
            bars.update(b, run.trainer.step)

            def on_step(stats, b=b, run=run, recorder=recorder) -> None:
                bars.update(b, stats.step, stats.loss)
                recorder.record(stats, run.trainer)

            run.train_until(cfg.train.steps, on_step)
            per_block.append(run.summary())
        metrics = assemble(cfg, storage, table, device)
        AssemblyRecorder(cfg.run.name, sink).record(metrics)
    finally:
        bars.close()
        if server is not None:
            server.shutdown()
    report = build_report(cfg, per_block, metrics, time.perf_counter() - start)
    write_report(storage, report)
    return report
