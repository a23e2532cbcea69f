"""data.read_threads: a window's shards read by several threads at once give the rows one
thread gives, name the first bad row in window order, and train the same block (real Parquet
files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from dbparallel.config import load_config
from dbparallel.data.parquet_index import parquet_index
from dbparallel.data.tables import image_table
from dbparallel.errors import DataError
from dbparallel.tasks import build_task
from dbparallel.training.loop import BlockRun
from dbparallel.training.storage import Storage
from dbparallel.training.stream import Window

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "jobs" / "tiny_cpu.yaml")


def _data(tmp_path: Path, bad: tuple[int, ...] = ()) -> tuple[Path, object]:
    """600 rows in 12 row groups (shards) of 50; labels out of range at rows ``bad``."""
    rng = np.random.default_rng(0)
    images = (rng.integers(0, 256, (600, 1, 8, 8)) / 255.0).astype(np.float32)
    labels = rng.integers(0, 10, 600)
    labels[list(bad)] = 12
    path = tmp_path / "d.parquet"
    pq.write_table(image_table(images, labels), path, row_group_size=50)
    cfg = load_config([TINY], [f"run.dir={tmp_path / 'run'}", "data.source=parquet",
                               f"data.path={path}", "data.validate=false", "train.steps=12",
                               "train.batch_size=40", "data.window_shards=4"])
    return path, cfg


@pytest.mark.parametrize("readers", [2, 3, 8])
def test_readers_fill_the_window_as_one_thread_does(tmp_path, readers) -> None:
    path, cfg = _data(tmp_path)
    index, task = parquet_index(str(path)), build_task(cfg)
    ids = [5, 0, 11, 3, 7]  # window order is not file order
    one = Window.read(index, "train", ids, task)
    many = Window.read(index, "train", ids, task, readers=readers)
    assert many.starts == one.starts and many.index is None
    assert all(torch.equal(many.rows[k], one.rows[k]) for k in one.rows)
    # shards taken from a held window, others read: the same rows again
    again = Window.read(index, "train", [3, 7, 2, 9], task, held=one, readers=readers)
    fresh = Window.read(index, "train", [3, 7, 2, 9], task)
    assert all(torch.equal(again.rows[k], fresh.rows[k]) for k in fresh.rows)


def test_of_shards_that_fail_the_first_in_window_order_is_named(tmp_path) -> None:
    path, cfg = _data(tmp_path, bad=(130, 560))  # shards 2 and 11
    index, task = parquet_index(str(path)), build_task(cfg)
    for ids in ([11, 2, 4, 6], [2, 11, 4, 6]):
        with pytest.raises(DataError) as err:
            Window.read(index, "train", ids, task, readers=4)
        first = 560 if ids[0] == 11 else 130
        assert f"row {first}: column 'label'" in str(err.value)


def test_a_block_trains_the_same_with_more_readers(tmp_path) -> None:
    path, _ = _data(tmp_path)
    losses: dict[int, list] = {}
    for readers in (1, 2):
        run_dir = tmp_path / f"run{readers}"
        c = load_config([TINY], [f"run.dir={run_dir}", "data.source=parquet",
                                 f"data.path={path}", "data.validate=false", "train.steps=12",
                                 "train.batch_size=40", "data.window_shards=4",
                                 f"data.read_threads={readers}"])
        run = BlockRun(c, 0, parquet_index(str(path)), Storage(c.run_dir))
        losses[readers] = []
        run.train_until(12, losses[readers].append)  # 12 steps: past a window's end
        run.close()
    assert len(losses[1]) == 12 and [s.loss for s in losses[2]] == [s.loss for s in losses[1]]
