"""How a block's stream reads its windows: a read that failed is read again when the block is
asked again (real Parquet files, local mode)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from dbparallel.config import load_config
from dbparallel.data import shard_reader
from dbparallel.data.parquet_index import parquet_index
from dbparallel.data.tables import image_table
from dbparallel.errors import DataUnreachable
from dbparallel.training.loop import BlockRun
from dbparallel.training.storage import Storage

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "jobs" / "tiny_cpu.yaml")


def _data(tmp_path: Path, rows: int = 600, group: int = 50) -> Path:
    rng = np.random.default_rng(0)
    images = (rng.integers(0, 256, (rows, 1, 8, 8)) / 255.0).astype(np.float32)
    path = tmp_path / "d.parquet"
    pq.write_table(image_table(images, rng.integers(0, 10, rows)), path, row_group_size=group)
    return path


def _cfg(run_dir: Path, data: Path, *extra: str):
    return load_config([TINY], [f"run.dir={run_dir}", "data.source=parquet", f"data.path={data}",
                                "data.window_shards=2", "train.steps=8",
                                "train.checkpoint_every=4", *extra])


def test_a_window_whose_read_failed_is_read_again_when_the_block_is_asked_again(
        tmp_path, monkeypatch) -> None:
    """Storage out of reach is a passing error: the driver asks the block again, and the block
    then reads the window again rather than raising the first read's error for good."""
    data = _data(tmp_path)
    index = parquet_index(str(data))
    cfg = _cfg(tmp_path / "a", data)
    straight = BlockRun(cfg, 1, index, Storage(cfg.run_dir))
    losses: list[float] = []
    straight.train_until(8, lambda s: losses.append(s.loss))
    straight.close()

    real, failed = shard_reader.read_pieces, []

    def out_of_reach_once(shard, *args):
        if not failed:
            failed.append(shard.row_group)
            raise DataUnreachable(f"{shard.uri}: 503 SlowDown")
        return real(shard, *args)

    monkeypatch.setattr("dbparallel.training.stream.read_pieces", out_of_reach_once)
    cfg = _cfg(tmp_path / "b", data)
    run = BlockRun(cfg, 1, index, Storage(cfg.run_dir))  # reads ahead, as every block does
    again: list[float] = []
    try:
        try:
            run.train_until(8, lambda s: again.append(s.loss))
            raise AssertionError("the failed read was not raised")
        except DataUnreachable:
            pass
        assert failed and run.trainer.step == 0
        run.train_until(8, lambda s: again.append(s.loss))  # the driver asks again
    finally:
        run.close()
    assert again == losses


def _stream(tmp_path: Path, batch: int, window: int, prefetch: bool = True):
    from dbparallel.tasks import build_task
    from dbparallel.training.data_order import DataOrder
    from dbparallel.training.stream import BlockStream

    data = _data(tmp_path)
    cfg = _cfg(tmp_path / "run", data, f"data.window_shards={window}")
    index = parquet_index(str(data))
    order = DataOrder([s.rows for s in index.shards("train")], batch, 0, 1, window)
    return BlockStream(index, "train", order, build_task(cfg), "cpu", prefetch=prefetch), index


@pytest.mark.parametrize("batch, step", [
    (45, 13),  # a block resumed at a step whose batch runs into the next epoch
    (1300, 0),  # batches of more rows than the data set: each spans three epochs
])
def test_a_data_set_within_one_window_is_read_once_when_a_batch_spans_epochs(
        tmp_path, monkeypatch, batch, step) -> None:
    """The windows of the epochs one batch spans share the rows of the first, though it is
    still being read when the next are asked for (each would otherwise be read, checked and
    held again, past the memory `data check` prints)."""
    from dbparallel.training.data_memory import data_footprint

    reads: list[int] = []
    real = shard_reader.read_pieces
    monkeypatch.setattr("dbparallel.training.stream.read_pieces",
                        lambda shard, *a: reads.append(shard.row_group) or real(shard, *a))
    stream, index = _stream(tmp_path, batch, 12)
    try:
        stream.batch(step)
        stream.batch(step + 1)
    finally:
        stream.close()
    assert sorted(reads) == list(range(12))  # every row group once
    bound = data_footprint(index, stream.task, 12, batch)
    assert stream.peak_bytes <= bound.bytes
