"""How a block's stream reads its windows: a read that failed is read again when the block is
asked again (real Parquet files, local mode)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

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
