"""A Parquet row group is read a few MiB of rows at a time: the same rows as a whole read, a
piece of memory instead of several row groups' worth, and a dropped connection resumes after
the rows already read (real Parquet files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from dbparallel.config import load_config
from dbparallel.data import shard_reader
from dbparallel.data.parquet_index import parquet_index
from dbparallel.data.shard_reader import read_pieces, read_shard
from dbparallel.errors import DataError, DataUnreachable
from dbparallel.training.loop import BlockRun
from dbparallel.training.storage import Storage

POOLS: list[pa.MemoryPool] = []
TINY = str(Path(__file__).resolve().parents[2] / "jobs" / "tiny_cpu.yaml")


def _pixels(rows: int, side: int, seed: int = 0) -> pa.Table:
    """``rows`` uint8 images of 3 x side x side as fixed-size lists, labels and a split."""
    rng = np.random.default_rng(seed)
    flat = rng.integers(0, 256, (rows, 3 * side * side), dtype=np.uint8)
    return pa.table({
        "image": pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), flat.shape[1]),
        "label": pa.array(rng.integers(0, 10, rows)),
        "split": pa.array(np.where(np.arange(rows) % 4 == 3, "test", "train")),
    })


def _one_group(table: pa.Table, path: Path) -> Path:
    pq.write_table(table, path, row_group_size=table.num_rows)
    return path


@pytest.mark.parametrize("split", ["train", "test"])
def test_a_row_group_read_in_pieces_is_the_row_group(tmp_path, monkeypatch, split) -> None:
    table = _pixels(1000, 4)
    index = parquet_index(str(_one_group(table, tmp_path / "d.parquet")))
    monkeypatch.setattr("dbparallel.data.row_groups.PIECE_BYTES", 4096)  # ~80 rows a piece
    (shard,) = index.shards(split)
    pieces = list(read_pieces(shard, ["image", "label"]))
    assert len(pieces) >= 10
    mine = np.flatnonzero(np.asarray(table.column("split").to_pylist()) == split)
    got = pa.concat_tables([p.table for p in pieces])
    assert got.column_names == ["image", "label"]
    assert got.column("label").to_pylist() == table.column("label").take(mine).to_pylist()
    assert got.column("image").to_pylist() == table.column("image").take(mine).to_pylist()
    rows = np.concatenate([p.file_rows for p in pieces])
    assert rows.tolist() == mine.tolist()  # each row knows its row in the file
    head = read_shard(shard, ["label"], limit=100)  # the first rows of the split only
    assert head.file_rows.tolist() == mine[:100].tolist()


def test_reading_a_row_group_holds_a_piece_of_it_not_the_row_group(tmp_path) -> None:
    """40 MB of uint8 image lists in one row group: read whole, Arrow's decoding holds about
    ten times that at once (the list levels of every value); in pieces, a few MiB."""
    table = _pixels(13_000, 32).drop_columns(["split"])
    (shard,) = parquet_index(str(_one_group(table, tmp_path / "d.parquet"))).shards("train")
    size = table.nbytes
    previous = pa.default_memory_pool()
    pools = [pa.proxy_memory_pool(pa.system_memory_pool()) for _ in range(2)]
    POOLS.extend(pools)  # a pool must outlive every buffer it allocated: never freed
    try:
        pa.set_memory_pool(pools[0])
        rows = sum(p.table.num_rows for p in read_pieces(shard, ["image", "label"]))
        pa.set_memory_pool(pools[1])
        read_shard(shard, ["image", "label"], limit=16)
    finally:
        pa.set_memory_pool(previous)
    whole, head = pools[0].max_memory(), pools[1].max_memory()
    assert rows == 13_000
    assert whole < size / 2, (whole, size)
    assert head < 16 << 20, head  # measuring a row reads the first rows, not the row group


def test_a_dropped_connection_resumes_after_the_rows_already_read(tmp_path,
                                                                  monkeypatch) -> None:
    table = _pixels(600, 4)
    (shard,) = parquet_index(str(_one_group(table, tmp_path / "d.parquet"))).shards("train")
    monkeypatch.setattr("dbparallel.data.row_groups.PIECE_BYTES", 4096)
    clean = read_shard(shard, ["image", "label"])
    real, attempts = shard_reader.row_group_batches, []

    def dropping(f, group, columns, fail_after: int = 3, **kwargs):
        attempts.append(1)
        for i, batch in enumerate(real(f, group, columns, **kwargs)):
            if len(attempts) == 1 and i == fail_after:
                raise ConnectionResetError(104, "connection reset by peer")
            yield batch

    monkeypatch.setattr(shard_reader, "RETRIES", (0.0, 0.0, 0.0))
    monkeypatch.setattr(shard_reader, "row_group_batches", dropping)
    again = read_shard(shard, ["image", "label"])
    assert len(attempts) == 2
    assert again.file_rows.tolist() == clean.file_rows.tolist()  # no row twice, none lost
    assert again.table.equals(clean.table)

    def down(f, group, columns, **kwargs):
        raise ConnectionRefusedError(111, "connection refused")
        yield

    monkeypatch.setattr(shard_reader, "row_group_batches", down)
    with pytest.raises(DataUnreachable, match=r"d.parquet row group 0: .*connection refused"):
        read_shard(shard, ["image", "label"])


def test_a_damaged_local_file_is_bad_data_at_once_not_a_connection_to_retry(
        tmp_path, monkeypatch, capsys) -> None:
    """Bytes overwritten inside a row group's pages: Arrow's read fails with an error that
    has no OS error number, which a local file can only mean as damage."""
    data = tmp_path / "data"
    data.mkdir()
    table = _pixels(300, 4).drop_columns(["split"])
    pq.write_table(table, data / "a.parquet", row_group_size=100)
    pq.write_table(table, data / "b.parquet", row_group_size=100)
    raw = bytearray((data / "b.parquet").read_bytes())
    middle = len(raw) // 2
    raw[middle:middle + 2000] = b"\xff" * 2000
    (data / "b.parquet").write_bytes(bytes(raw))
    monkeypatch.setattr(shard_reader, "RETRIES", (60.0, 60.0, 60.0))  # a retry would hang
    (shard,) = [s for s in parquet_index(str(data)).shards("train") if s.row_group == 1
                and s.uri.endswith("b.parquet")]
    with pytest.raises(DataError, match=r"b.parquet row group 1: not readable"):
        read_shard(shard, ["image", "label"])
    from dbparallel import cli

    assert cli.main(["data", "check", str(data), "data.image_size=4", "data.channels=3"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "b.parquet row group 1: not readable" in err


def test_windows_filled_piece_by_piece_give_the_batches_of_whole_shards(
        tmp_path, monkeypatch) -> None:
    rng = np.random.default_rng(0)
    flat = (rng.integers(0, 256, (600, 64)) / 255.0).astype(np.float32)
    table = pa.table({
        "image": pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), 64),
        "label": pa.array(rng.integers(0, 10, 600))})
    data = tmp_path / "d.parquet"
    pq.write_table(table, data, row_group_size=100)
    index = parquet_index(str(data))

    def batches(run: str) -> list[dict[str, torch.Tensor]]:
        cfg = load_config([TINY], [f"run.dir={tmp_path / run}", "data.source=parquet",
                                   f"data.path={data}", "data.window_shards=2",
                                   "train.batch_size=40"])
        block = BlockRun(cfg, 1, index, Storage(cfg.run_dir), prefetch=False)
        out = [block.batch(step) for step in range(20)]  # 1.3 epochs of 3 windows
        block.close()
        return out

    whole = batches("whole")  # a row group of 100 rows x 264 B is one piece
    monkeypatch.setattr("dbparallel.data.row_groups.PIECE_BYTES", 1000)  # 3 rows a piece
    pieces = batches("pieces")
    for a, b in zip(whole, pieces, strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_pieces_are_sized_by_what_the_rows_decode_to(tmp_path, monkeypatch) -> None:
    """Blank images (run-length encoded to almost nothing) and a large column that is not read
    (its name starting like the read one's) do not make pieces larger or smaller."""
    rows = 20_000
    blank = np.zeros((rows, 784), dtype=np.uint8)
    table = pa.table({
        "image": pa.FixedSizeListArray.from_arrays(pa.array(blank.ravel()), 784),
        "label": pa.array(np.zeros(rows, dtype=np.int64)),
        "image.caption": pa.array([b"x" * 200] * rows, pa.binary()),
    })
    pq.write_table(table, tmp_path / "blank.parquet", row_group_size=rows)
    meta = pq.read_metadata(tmp_path / "blank.parquet").row_group(0)
    assert meta.column(0).total_uncompressed_size < rows * 784 / 10  # encoded: looks small
    (shard,) = parquet_index(str(tmp_path / "blank.parquet")).shards("train")
    sizes = [p.table.nbytes for p in read_pieces(shard, ["image", "label"])]
    piece = 1 << 20
    assert len(sizes) >= rows * 792 // piece  # decoded: 15 MiB in pieces of about 1 MiB
    assert max(sizes) <= 1.1 * piece


def test_a_row_group_that_changed_under_a_stream_is_named(tmp_path) -> None:
    path = tmp_path / "d.parquet"
    pq.write_table(_pixels(400, 4), path, row_group_size=200)
    index = parquet_index(str(path))
    cfg = load_config([TINY], [f"run.dir={tmp_path / 'run'}", "data.source=parquet",
                               f"data.path={path}", "data.image_size=4", "data.channels=3",
                               "data.window_shards=1"])
    for rows, group, message in ((600, 300, r"row group [01] now has more than 150 rows"),
                                 (200, 200, r"row group 1: not readable: no row group 1")):
        pq.write_table(_pixels(rows, 4), path, row_group_size=group)  # rewritten mid-run
        block = BlockRun(cfg, 0, index, Storage(cfg.run_dir), prefetch=False)
        with pytest.raises(DataError, match=message):
            for step in range(20):
                block.batch(step)
        block.close()


def test_encoded_images_are_unpacked_in_groups_of_pieces(tmp_path, monkeypatch) -> None:
    """Small pieces of encoded images are decoded together, in groups of about UNPACK_BYTES:
    enough rows for every decode thread."""
    import io

    from PIL import Image

    from dbparallel.tasks.image_data import ImageData

    rng = np.random.default_rng(0)
    blobs = []
    for _ in range(1000):
        out = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(out, "PNG")
        blobs.append(out.getvalue())
    path = tmp_path / "png.parquet"
    pq.write_table(pa.table({"image": pa.array(blobs, pa.binary()),
                             "label": pa.array(rng.integers(0, 10, 1000))}), path)
    monkeypatch.setattr("dbparallel.data.row_groups.PIECE_BYTES", 4096)  # ~16 rows a piece
    monkeypatch.setattr("dbparallel.training.stream.UNPACK_BYTES", 64 << 10)
    unpacked, real = [], ImageData.unpack
    monkeypatch.setattr(ImageData, "unpack",
                        lambda self, rows: unpacked.append(rows.num_rows) or real(self, rows))
    cfg = load_config([TINY], [f"run.dir={tmp_path / 'run'}", "data.source=parquet",
                               f"data.path={path}", "data.image_size=8", "data.channels=3",
                               "data.validate=false"])
    block = BlockRun(cfg, 0, parquet_index(str(path)), Storage(cfg.run_dir), prefetch=False)
    block.batch(0)
    block.close()
    assert sum(unpacked) == 1000
    per_row = np.mean([len(b) for b in blobs]) + 8
    assert min(unpacked[:-1]) >= (64 << 10) / per_row * 0.9  # groups, not 16-row pieces
