"""The stream gathers the next step's rows ahead, in a background thread, and they are the rows
that gathering them when their step comes gives (real Parquet files, local mode)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from dbparallel.config import load_config
from dbparallel.core.share import Share
from dbparallel.data.parquet_index import parquet_index
from dbparallel.data.tables import image_table
from dbparallel.tasks import build_task
from dbparallel.training import stream as stream_module
from dbparallel.training.data_order import DataOrder
from dbparallel.training.stream import BlockStream

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "jobs" / "tiny_cpu.yaml")


def _streams(tmp_path: Path, batch: int, window: int, share: Share | None
             ) -> tuple[BlockStream, BlockStream]:
    """Two streams of the same block over 12 shards of 50 rows: one gathering ahead (and
    reading windows ahead), one doing both when a step comes."""
    rng = np.random.default_rng(0)
    images = (rng.integers(0, 256, (600, 1, 8, 8)) / 255.0).astype(np.float32)
    path = tmp_path / "d.parquet"
    pq.write_table(image_table(images, rng.integers(0, 10, 600)), path, row_group_size=50)
    cfg = load_config([TINY], [f"run.dir={tmp_path / 'run'}", "data.source=parquet",
                               f"data.path={path}", f"data.window_shards={window}"])
    index, task = parquet_index(str(path)), build_task(cfg)
    order = DataOrder([s.rows for s in index.shards("train")], batch, 0, 1, window)
    return (BlockStream(index, "train", order, task, "cpu", prefetch=True, share=share),
            BlockStream(index, "train", order, task, "cpu", prefetch=False, share=share))


@pytest.mark.parametrize("batch, window, share", [
    (70, 2, None),  # batches across window and epoch ends
    (70, 2, Share.of(1, 3, 70)),  # a replica's share of each batch
    (70, 1, None),  # a batch may span windows not yet read when the step before is done
])
def test_rows_gathered_ahead_are_the_steps_rows(tmp_path, monkeypatch, batch, window,
                                                share) -> None:
    where: list[str] = []
    real = stream_module._gather
    monkeypatch.setattr(stream_module, "_gather",
                        lambda *a: where.append(threading.current_thread().name) or real(*a))
    ahead, when_due = _streams(tmp_path, batch, window, share)
    steps = 3 * 600 // batch + 1  # more than 3 epochs
    for step in range(steps):
        got, want = ahead.batch(step), when_due.batch(step)
        assert all(torch.equal(got[k], want[k]) for k in want), f"step {step}"
    if ahead._ahead is not None:  # the last gather ahead has run (close cancels a queued one)
        ahead._ahead[1].exception()
    ahead.close(), when_due.close()
    background = [name for name in where if name.startswith("batch")]
    if window == 2:
        # every step but the first: the windows they lie in are always held or being read
        assert len(background) == steps
    else:
        # only where the next batch's windows are all held or asked for already; others are
        # gathered when their step comes, so no more windows are held than data_memory counts
        assert 0 < len(background) < steps


def test_a_step_other_than_the_one_gathered_ahead_gets_its_own_rows(tmp_path) -> None:
    ahead, when_due = _streams(tmp_path, 70, 2, None)
    ahead.batch(0)  # gathers step 1 ahead
    for step in (5, 3, 4):  # a jump forward, one back, and the next one
        got, want = ahead.batch(step), when_due.batch(step)
        assert all(torch.equal(got[k], want[k]) for k in want), f"step {step}"
    ahead.close(), when_due.close()


def test_closing_a_stream_with_a_gather_ahead_in_flight_returns(tmp_path) -> None:
    ahead, _ = _streams(tmp_path, 70, 2, None)
    ahead.batch(0)
    ahead.close()
    assert ahead._ahead is None and not ahead._windows


def test_a_block_reports_how_long_it_waited_for_its_batches(tmp_path, monkeypatch) -> None:
    from dbparallel.training.loop import BlockRun
    from dbparallel.training.storage import Storage

    ahead, _ = _streams(tmp_path, 70, 2, None)
    ahead.close()
    cfg = load_config([TINY], [f"run.dir={tmp_path / 'run'}", "data.source=parquet",
                               f"data.path={tmp_path / 'd.parquet'}", "train.batch_size=70",
                               "train.steps=4", "data.window_shards=2"])
    run = BlockRun(cfg, 0, parquet_index(str(tmp_path / "d.parquet")), Storage(cfg.run_dir))
    real = run.stream.batch
    monkeypatch.setattr(run.stream, "batch", lambda step: time.sleep(0.05) or real(step))
    seen: list = []
    run.train_until(4, seen.append)
    run.close()
    assert [s.step for s in seen] == [1, 2, 3, 4]
    assert all(s.data_wait_s >= 0.05 for s in seen)  # each step waited its batch's sleep
    # the process's first step (it counts FLOPs and memory, after its first window's read)
    # is left out, as achieved_tflops leaves it out
    assert run.trainer.timed_steps == 3
    assert run.data_wait_s == pytest.approx(sum(s.data_wait_s for s in seen[1:]))
    assert run.busy_s == pytest.approx(sum(s.data_wait_s + s.step_time_s for s in seen[1:]))
    row = run.summary()
    assert 0 < row["data_wait_share"] == run.data_wait_s / run.busy_s < 1
