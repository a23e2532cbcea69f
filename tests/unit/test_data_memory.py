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
from dbparallel.training.data_memory import (
    INDEX_BYTES,
    DataFootprint,
    data_footprint,
    footprint_line,
    footprint_warning,
)
from dbparallel.training.data_order import DataOrder
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


def _cfg(tmp_path: Path, data: Path, window: int, batch: int = 40, *extra: str):
    return load_config([TINY], [f"run.dir={tmp_path / 'run'}", "data.source=parquet",
                                f"data.path={data}", f"data.window_shards={window}",
                                f"train.batch_size={batch}", *extra])


@pytest.mark.parametrize("pixels, row_bytes", [("float", 64 * 4 + 8), ("uint8", 64 + 8)])
def test_a_row_is_measured_at_its_unpacked_size(tmp_path, pixels, row_bytes) -> None:
    data = _data(tmp_path, pixels)
    cfg = _cfg(tmp_path, data, 2)
    footprint = data_footprint(parquet_index(str(data)), build_task(cfg), 2, 40)
    # pixels and an int64 label; two windows of 100 rows and two batches of 40
    # (12 shards in windows of 2: an epoch may start with the shards the one before ended
    # with, in another order, sharing their rows with an index of 100 positions)
    assert footprint == DataFootprint(row_bytes, 100, 2, 200, indexes=1, batch_rows=80)


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
    # reached, never exceeded: the windows, the step's rows and the next step's, gathered
    # ahead unless they lie in windows not yet read (a batch larger than a window)
    ahead = prefetch and batch <= footprint.window_rows
    one_batch = batch * footprint.row_bytes
    # (windows of 2: the index of a window that comes again across an epoch's end, which
    # this order does not have; the next test's does)
    unreached = INDEX_BYTES * footprint.window_rows if window == 2 else 0
    assert run.stream.peak_bytes == footprint.bytes - (0 if ahead else one_batch) - unreached


@pytest.mark.parametrize("window, seed", [(1, 8), (2, 172)])
def test_a_window_that_comes_again_across_an_epoch_end_stays_within_the_footprint(
        tmp_path, window, seed) -> None:
    """Run seeds whose epoch 1 starts with the shards epoch 0 ended with: that window shares
    their rows, and outlives the window it shares them with. One shard again (rows in their
    own order) needs no index; two in another order hold one, which the footprint counts. The
    bound is reached either way."""
    data = _data(tmp_path)
    cfg = _cfg(tmp_path, data, window, 40, f"run.seed={seed}")
    index = parquet_index(str(data))
    order = DataOrder([50] * 12, 40, seed, 0, window)
    assert sorted(order.shards_of(0, 12 // window - 1)) == sorted(order.shards_of(1, 0))
    footprint = data_footprint(index, build_task(cfg), window, 40)
    assert footprint.indexes == (window == 2)
    run = BlockRun(cfg, 0, index, Storage(cfg.run_dir))
    for step in range(2 * 600 // 40):  # 2 epochs
        run.batch(step)
    run.close()
    assert run.stream.peak_bytes == footprint.bytes


def test_the_blocks_on_one_machine_are_warned_past_half_its_memory() -> None:
    f = DataFootprint(row_bytes=1000, window_rows=1000, windows=2, rows=2000)  # 2 MB
    assert footprint_warning(f.bytes, blocks=4, memory=16_000_000) is None  # 8 MB: half
    warning = footprint_warning(f.bytes, blocks=4, memory=15_000_000)
    assert warning is not None and "data.window_shards" in warning and "4 blocks" in warning


def test_train_and_data_check_print_the_footprint(tmp_path, capsys) -> None:
    data = _data(tmp_path)
    assert main(["data", "check", str(data), "data.window_shards=2",
                 "data.image_size=8", "data.channels=1"]) == 0
    out = capsys.readouterr().out
    assert "a block holds two windows (the current and the next) of at most 100 rows each and " \
           "two batches of 64 rows (the step's and the next's), x 264 B unpacked = 85.3 KiB" \
           in out
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
    images[:3] = 0.5
    images[[4, 15]] = 2.0  # the last row measured bad too: measured on the rows before it
    pq.write_table(image_table(images, rng.integers(0, 10, 40)), tmp_path / "d.parquet")
    index = parquet_index(str(tmp_path / "d.parquet"))
    assert data_footprint(index, build_task(cfg), 2, 40).row_bytes == 264
    images[:16] = 2.0
    pq.write_table(image_table(images, rng.integers(0, 10, 40)), tmp_path / "d.parquet")
    index = parquet_index(str(tmp_path / "d.parquet"))
    with pytest.raises(DataError, match=r"d\.parquet row 0: column 'image'") as err:
        data_footprint(index, build_task(cfg), 2, 40)
    assert str(err.value).startswith("the first 16 bad rows (it stops at 16; more may follow)")
    assert str(err.value).count("\n") == 16  # each named


def test_data_check_of_a_data_set_without_training_rows_prints_no_footprint(tmp_path,
                                                                          capsys) -> None:
    data = _data(tmp_path)
    (tmp_path / "only").mkdir()
    data.rename(tmp_path / "only" / "test.parquet")  # a test split and nothing else
    assert main(["data", "check", str(tmp_path / "only"), "data.image_size=8",
                 "data.channels=1"]) == 0
    out = capsys.readouterr().out
    assert "test: 600 rows" in out and "a block holds" not in out


def _most_held(sizes: list[int], window_shards: int, batch: int, seeds: int = 300,
               epochs: int = 6) -> int:
    """The most rows a stream holds at a batch (the run of windows from the previous batch's
    last one to this batch's last one, or the one read after it), over ``seeds`` orders."""
    most = 0
    for seed in range(seeds):
        order = DataOrder(sizes, batch, seed, 0, window_shards)
        rows = {}
        before = None
        for step in range(epochs * sum(sizes) // batch):
            segments = order.segments(step)
            first = before or (segments[0].epoch, segments[0].window)
            last = (segments[-1].epoch, segments[-1].window)
            run, key = [], first
            while key <= max(last, order.next_window(*first)):
                run.append(key)
                key = order.next_window(*key)
            for e, w in run:
                rows[(e, w)] = sum(sizes[s] for s in order.shards_of(e, w))
            most = max(most, sum(rows[k] for k in run))
            before = last
    return most


@pytest.mark.parametrize("sizes, window, batch, want", [
    ([64] * 8 + [1], 8, 32, 2 * 512 + 1),  # one short row group: the short window between
    ([50] * 12, 1, 128, 200),  # two whole windows inside a batch
    ([50] * 12, 5, 40, 500),  # a short last window (100 rows) that no batch holds whole
    ([50] * 9 + [7], 3, 60, 300 + 50),  # the short window (one shard) inside a batch
    ([10] * 7, 3, 45, 100),  # two windows inside a batch, one of them short
])
def test_the_rows_held_are_an_upper_bound_that_is_reached(tmp_path, sizes, window, batch,
                                                          want) -> None:
    """8 row groups of 4,096 rows and one of 1 once printed 2,049 windows of 32,768 rows."""
    from dbparallel.training.data_memory import held_rows

    rows, _ = held_rows(sizes, window, batch)
    assert rows == want
    assert _most_held(sizes, window, batch) == want


def test_one_short_row_group_does_not_inflate_the_printed_footprint(tmp_path) -> None:
    """8 row groups of 64 rows and one of 1 row, batches of 32: at most two windows of 512
    rows and the 1-row window between them (not 33 windows of 512 rows)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (513, 64)).astype(np.uint8)
    table = pa.table({"image": pa.FixedSizeListArray.from_arrays(pa.array(images.ravel()), 64),
                      "label": pa.array(rng.integers(0, 10, 513))})
    path = tmp_path / "d.parquet"
    with pq.ParquetWriter(path, table.schema) as writer:
        writer.write_table(table.slice(0, 512), row_group_size=64)
        writer.write_table(table.slice(512), row_group_size=64)
    cfg = _cfg(tmp_path, path, 8, 32)
    index = parquet_index(str(path))
    footprint = data_footprint(index, build_task(cfg), 8, 32)
    assert footprint.window_bytes == 1025 * 72  # was 33 x 512 rows
    assert footprint.bytes == (1025 + 2 * 32) * 72  # and two batches of 32 rows
    assert (footprint.rows, footprint.windows, footprint.window_rows) == (1025, 3, 512)
    assert footprint_line(footprint) == (
        "data: a block holds 3 windows (a batch spans several, and the next is read) of at "
        "most 512 rows each, 1,025 rows in all and two batches of 32 rows (the step's and "
        "the next's), x 72 B unpacked = 76.6 KiB")
    run = BlockRun(cfg, 0, index, Storage(cfg.run_dir), prefetch=False)
    for step in range(4 * 513 // 32):
        run.batch(step)
    run.close()
    # this order's most: 962 rows of windows, and one batch (none gathered ahead here)
    assert 512 * 72 < run.stream.peak_bytes <= footprint.bytes - 32 * 72


def test_tiny_row_groups_are_warned_of_with_the_reshard_command(tmp_path, capsys) -> None:
    """Row groups of 1 row trained 100x slower than row groups of thousands, silently."""
    from dbparallel.training.data_memory import report_footprint

    rng = np.random.default_rng(0)
    table = image_table(rng.random((64, 1, 8, 8)), rng.integers(0, 10, 64))
    pq.write_table(table, tmp_path / "tiny.parquet", row_group_size=1)
    cfg = _cfg(tmp_path, tmp_path / "tiny.parquet", 8, 40)
    report_footprint(cfg, parquet_index(str(tmp_path / "tiny.parquet")))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "64 Parquet row groups of a median 1 row" in err
    assert "dbparallel data reshard" in err
    data = _data(tmp_path)  # row groups of 50 rows, batches of 40: no warning
    report_footprint(_cfg(tmp_path, data, 8, 40), parquet_index(str(data)))
    assert capsys.readouterr().err == ""
    report_footprint(_cfg(tmp_path, data, 8, 401), parquet_index(str(data)))  # 50 < 401 / 8
    assert "row groups of a median 50 rows" in capsys.readouterr().err


@pytest.mark.parametrize("group_rows", [4, 1])
def test_too_few_rows_for_a_bigger_row_group_are_not_warned_of(tmp_path, capsys,
                                                                group_rows) -> None:
    """4 rows, batches of 40: one row group of 4 rows (what a reshard writes) or four of 1
    row; a reshard cannot make a row group of 40 / 8 rows, so nothing is said of resharding."""
    from dbparallel.training.data_memory import report_footprint

    rng = np.random.default_rng(0)
    path = tmp_path / "few.parquet"
    pq.write_table(image_table(rng.random((4, 1, 8, 8)), rng.integers(0, 10, 4)), path,
                   row_group_size=group_rows)
    report_footprint(_cfg(tmp_path, path, 8, 40), parquet_index(str(path)))
    assert "reshard" not in capsys.readouterr().err


def test_each_replica_holds_the_windows_and_its_share_of_two_batches(tmp_path) -> None:
    data = _data(tmp_path)
    cfg = _cfg(tmp_path, data, 2)
    index = parquet_index(str(data))
    whole = data_footprint(index, build_task(cfg), 2, 40)
    each = data_footprint(index, build_task(cfg), 2, 40, replicas=2)
    assert (each.window_bytes, each.batch_rows, whole.batch_rows) == (whole.window_bytes, 40, 80)
