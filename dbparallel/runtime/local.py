"""Local mode: the same block trainers, one after another in this process, without Ray."""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from dbparallel.config import Config
from dbparallel.data.shards import DataIndex
from dbparallel.errors import UserError
from dbparallel.runtime.linger import linger
from dbparallel.runtime.metrics import (
    AssemblyRecorder,
    BlockRecorder,
    MemorySink,
    PrometheusSink,
    Sink,
    series_line,
)
from dbparallel.runtime.metrics_port import port_line
from dbparallel.runtime.progress import BlockBars
from dbparallel.training.assemble import assemble
from dbparallel.training.assembling import assembling
from dbparallel.training.curves import write_curves
from dbparallel.training.data_pin import pin_data
from dbparallel.training.device import assembly_device, block_device
from dbparallel.training.history import AssemblyLog
from dbparallel.training.loop import BlockRun
from dbparallel.training.precision import process_settings_kept
from dbparallel.training.progress import progress_shown
from dbparallel.training.report import build_report, write_report
from dbparallel.training.resume import resume_line
from dbparallel.training.run_dir import open_run
from dbparallel.training.run_id import ensure_run_id

log = logging.getLogger(__name__)


def check_blocks(cfg: Config, blocks: list[int]) -> None:
    """A UserError naming the first of ``blocks`` (``--block``) the run does not have."""
    bad = [b for b in blocks if not 0 <= b < cfg.model.blocks]
    if bad:
        raise UserError(f"--block {bad[0]}: must be in 0..{cfg.model.blocks - 1} "
                        f"(model.blocks={cfg.model.blocks})")


def run_local(cfg: Config, index: DataIndex | None = None, progress: bool | None = None,
              only_blocks: list[int] | None = None) -> dict[str, Any]:
    """Train every block, assemble, write report.json; returns the report. Every block
    streams ``index`` (default: the data of ``cfg.data``).

    With ``only_blocks``, train just those blocks (other processes or machines may train the
    rest into the same run directory) and neither assemble nor write report.json: the
    returned report has an empty ``assembly``; ``dbparallel eval`` composes the blocks later.
    """
    with process_settings_kept():  # torch's threads and precision, as the caller had them
        return _run_local(cfg, index, progress, only_blocks)


def _run_local(cfg: Config, index: DataIndex | None, progress: bool | None,
               only_blocks: list[int] | None) -> dict[str, Any]:
    """``run_local``'s run, within its caller's torch settings."""
    start = time.perf_counter()
    blocks = list(range(cfg.model.blocks)) if only_blocks is None else sorted(set(only_blocks))
    check_blocks(cfg, blocks)
    if cfg.train.assemble_every:
        log.warning("train.assemble_every=%d is for Ray runs, where the blocks train at once; "
                    "here they train one after another and are assembled once, at the end",
                    cfg.train.assemble_every)
    device = block_device(cfg)  # before anything is written: a missing GPU is a config error
    assembly = assembly_device(cfg) if only_blocks is None else "cpu"
    torch.set_num_threads(cfg.runtime.torch_threads)
    storage = open_run(cfg, blocks)
    run_id = ensure_run_id(storage)  # the label of this run's metrics, whichever blocks it trains
    if index is None:
        from dbparallel.data.sources import open_data

        index = open_data(cfg.data)
    pin_data(storage, index, start=only_blocks is None)  # others may train the rest
    resuming = resume_line(storage, cfg, blocks)
    if resuming:
        print(resuming, flush=True)
    assemblies = AssemblyLog(storage, start)
    sink: Sink = MemorySink()
    server = None
    if cfg.metrics.port:
        sink = PrometheusSink()
        server, port = sink.serve(cfg.metrics.port)
        print(port_line(cfg.metrics.port, port), flush=True)
        print(series_line(cfg.run.name, run_id), flush=True)
    bars = BlockBars(blocks, [cfg.train.steps_of(b) for b in blocks], progress)
    per_block = []
    try:
        for b in blocks:
            run = BlockRun(cfg, b, index, storage, device)
            try:  # from here on the block's lease is released however the process stops
                recorder = BlockRecorder(cfg.run.name, run_id, b, run.trainer.sigma_range,
                                         sink)
                # its counters go on from the run's totals, as a Ray actor's do (a resume
                # after a crash must not reset the skipped steps the alerts read)
                recorder.resumed(run.checkpoints.restarts(), run.trainer.nonfinite_steps)
                bars.start(b, run.trainer.step)
                bars.update(b, run.trainer.step)

                def on_step(stats, b=b, run=run, recorder=recorder) -> None:
                    # the mean of its last train.log_every steps: status's and report.json's
                    bars.update(b, stats.step, run.trainer.final_loss)
                    recorder.record(stats, run.trainer)

                run.train_until(cfg.train.steps_of(b), on_step)
                recorder.finished()  # the alerts' "a process trains it" ends with it
            finally:
                run.close()
            per_block.append(run.summary())
        if only_blocks is not None:  # a subset's process leaves the run's files to the run
            return build_report(cfg, run_id, per_block, {}, time.perf_counter() - start)
        # no lease held from here: `dbparallel status` and `stop` find it by its record, which
        # stays until report.json is written: the run is being assembled, then finished
        with assembling(storage, cfg.train.lease_timeout_s), progress_shown(progress):
            metrics = assemble(cfg, storage, index, assembly)
            AssemblyRecorder(cfg.run.name, run_id, sink).record(metrics)
            assemblies.append(int(metrics["block_steps_min"]), metrics)
            report = build_report(cfg, run_id, per_block, metrics, time.perf_counter() - start)
            write_report(storage, report)
        bars.close()
        if cfg.run.curves:
            write_curves(storage)
        if server is not None:  # the run is done: its final scores wait for a scrape
            linger(cfg.metrics.linger_s, f"at http://127.0.0.1:{port}/metrics")
    finally:
        bars.close()
        if server is not None:
            server.shutdown()
    return report
