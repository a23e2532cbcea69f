"""A block's data memory: the estimate printed before training against what its stream holds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dbparallel.cli import main
from dbparallel.config import load_config
from dbparallel.data.parquet_index import parquet_index
from dbparallel.data.tables import image_table
from dbparallel.tasks import build_task
from dbparallel.training.data_memory import DataFootprint, data_footprint, footprint_warning
from dbparallel.training.loop import BlockRun
from dbparallel.training.storage import Storage

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "jobs" / "tiny_cpu.yaml")


def _data(tmp_path: Path, pixels: str = "float") -> Path:
    """600 rows of 1x8x8 images in 12 row groups of 50."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (600, 1, 8, 8))
    table = image_table(images / 255, rng.integers(0, 10, 600))
    if pixels == "uint8":
        table = table.set_column(0, "image", pa.FixedSizeListArray.from_arrays(
            pa.array(images.astype(np.uint8).ravel()), 64))
    path = tmp_path / "d.parquet"
    pq.write_table(table, path, row_group_size=50)
    return path


def _cfg(tmp_path: Path, data: Path, window: int, batch: int = 40):
    return load_config([TINY], [f"run.dir={tmp_path / 'run'}", "data.source=parquet",
                                f"data.path={data}", f"data.window_shards={window}",
                                f"train.batch_size={batch}"])


@pytest.mark.parametrize("pixels, row_bytes", [("float", 64 * 4 + 8), ("uint8", 64 + 8)])
def test_a_row_is_measured_at_its_unpacked_size(tmp_path, pixels, row_bytes) -> None:
    data = _data(tmp_path, pixels)
    cfg = _cfg(tmp_path, data, 2)
    footprint = data_footprint(parquet_index(str(data)), build_task(cfg), 2, 40)
    assert footprint == DataFootprint(row_bytes, 100, 2)  # pixels and an int64 label


@pytest.mark.parametrize("prefetch", [False, True])
@pytest.mark.parametrize("window, batch, windows", [(2, 40, 2), (5, 40, 2), (12, 40, 1),
                                                    (1, 128, 4)])
def test_a_block_holds_at_most_what_the_footprint_says(tmp_path, window, batch, windows,
                                                       prefetch) -> None:
    """12 shards of 50 rows: windows of 2 (all of one size), of 5 (the last one of each epoch
    smaller), of 12 (the whole data, shared from epoch to epoch), and of 1 under batches of
    128 rows (a batch spans three windows; the one before is still held)."""
    data = _data(tmp_path)
    cfg = _cfg(tmp_path, data, window, batch)
    index = parquet_index(str(data))
    footprint = data_footprint(index, build_task(cfg), window, batch)
    run = BlockRun(cfg, 0, index, Storage(cfg.run_dir), prefetch=prefetch)
    for step in range(3 * 600 // batch):  # 3 epochs
        run.batch(step)
    run.close()
    assert footprint.windows == windows
    assert footprint.window_rows == min(window, 12) * 50
    assert run.stream.peak_bytes == footprint.bytes  # reached, never exceeded


def test_the_blocks_on_one_machine_are_warned_past_half_its_memory() -> None:
    f = DataFootprint(row_bytes=1000, window_rows=1000, windows=2)  # 2 MB a block
    assert footprint_warning(f.bytes, blocks=4, memory=16_000_000) is None  # 8 MB: half
    warning = footprint_warning(f.bytes, blocks=4, memory=15_000_000)
    assert warning is not None and "data.window_shards" in warning and "4 blocks" in warning


def test_train_and_data_check_print_the_footprint(tmp_path, capsys) -> None:
    data = _data(tmp_path)
    assert main(["data", "check", str(data), "data.window_shards=2",
                 "data.image_size=8", "data.channels=1"]) == 0
    out = capsys.readouterr().out
    assert "a block holds two windows (the current and the next) of at most 100 rows x " \
           "264 B unpacked = 51.6 KiB" in out
    assert main(["train", "--local", TINY, f"run.dir={tmp_path / 'run'}", "data.source=parquet",
                 f"data.path={data}", "data.window_shards=12", "train.steps=2"]) == 0
    out = capsys.readouterr().out
    assert "a block holds one window (the data fit in it) of at most 600 rows" in out


def test_bad_first_rows_are_left_to_training_unless_every_row_measured_is_bad(tmp_path) -> None:
    from dbparallel.errors import DataError

    rng = np.random.default_rng(0)
    images = rng.random((40, 1, 8, 8))
    images[:3] = 2.0  # the first 3 rows are bad: the size is measured on rows 3..15
    cfg = _cfg(tmp_path, tmp_path / "d.parquet", 2)
    pq.write_table(image_table(images, rng.integers(0, 10, 40)), tmp_path / "d.parquet")
    index = parquet_index(str(tmp_path / "d.parquet"))
    assert data_footprint(index, build_task(cfg), 2, 40).row_bytes == 264
    images[:16] = 2.0
    pq.write_table(image_table(images, rng.integers(0, 10, 40)), tmp_path / "d.parquet")
    index = parquet_index(str(tmp_path / "d.parquet"))
    with pytest.raises(DataError, match=r"d\.parquet row 0: column 'image'"):
        data_footprint(index, build_task(cfg), 2, 40)


def test_data_check_of_a_data_set_without_training_rows_prints_no_footprint(tmp_path,
                                                                          capsys) -> None:
    data = _data(tmp_path)
    (tmp_path / "only").mkdir()
    data.rename(tmp_path / "only" / "test.parquet")  # a test split and nothing else
    assert main(["data", "check", str(tmp_path / "only"), "data.image_size=8",
                 "data.channels=1"]) == 0
    out = capsys.readouterr().out
    assert "test: 600 rows" in out and "a block holds" not in out
