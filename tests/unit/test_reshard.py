"""`dbparallel data reshard`: image data rewritten in row groups of data.shard_rows rows, the
same rows in the same order, from one huge row group or an image folder (real files)."""

from __future__ import annotations

import io
import json
import re
import shlex

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from PIL import Image

from dbparallel.cli import main
from dbparallel.config import DataConfig
from dbparallel.data import decoded_pieces as decoded_pieces_module
from dbparallel.data import parquet_out
from dbparallel.data.encoded import decode_encoded
from dbparallel.data.image_folder import image_folder_index
from dbparallel.data.parquet_index import parquet_index
from dbparallel.data.parquet_out import CLASSES_KEY
from dbparallel.data.reshard import class_names
from dbparallel.data.split_reader import iter_split


def _table(rows: int) -> pa.Table:
    rng = np.random.default_rng(0)
    flat = rng.integers(0, 256, (rows, 3 * 4 * 4), dtype=np.uint8)
    return pa.table({
        "image": pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), flat.shape[1]),
        "label": pa.array(rng.integers(0, 10, rows)),
        "split": pa.array(np.where(np.arange(rows) % 4 == 3, "test", "train")),
    })


def _rows(path: str, split: str) -> pa.Table:
    index = parquet_index(path)
    return pa.concat_tables(r.table for r in iter_split(index, split, ["image", "label"]))


def test_one_huge_row_group_becomes_row_groups_of_shard_rows(tmp_path, monkeypatch,
                                                             capsys) -> None:
    source = tmp_path / "one.parquet"
    pq.write_table(_table(1000), source)  # pyarrow's default: a single row group
    assert pq.ParquetFile(source).num_row_groups == 1
    monkeypatch.setattr(parquet_out, "GROUPS_PER_FILE", 2)
    out = tmp_path / "out&1"  # the commands printed quote it: in a shell `&` ends one
    assert main(["data", "reshard", str(source), "--out", str(out),
                 "data.image_size=4", "data.channels=3", "data.shard_rows=128"]) == 0
    printed = capsys.readouterr().out
    assert "train: 750 rows in 6 row groups of at most 128 rows" in printed
    assert "test: 250 rows in 2 row groups" in printed
    assert f"train on them with data.source=parquet data.path='{out}' data.image_size=4 " \
           f"data.channels=3\n" in printed  # the settings given that are not the defaults
    check = re.search(r"not decoded: `(dbparallel data check [^`]*)`, with the same data "
                      r"settings", printed)
    assert check is not None and shlex.split(check[1])[1:] == ["data", "check", str(out)]
    files = sorted(p.name for p in out.iterdir())
    assert files == ["test-00000.parquet", "train-00000.parquet", "train-00001.parquet",
                     "train-00002.parquet"]
    index = parquet_index(str(out))
    assert [s.rows for s in index.shards("train")] == [128] * 5 + [110]
    assert [s.rows for s in index.shards("test")] == [128, 122]
    for split in ("train", "test"):  # the same rows, in the same order
        assert _rows(str(out), split).equals(_rows(str(source), split))
    assert main(["data", "check", str(out), "data.image_size=4", "data.channels=3"]) == 0


def test_an_image_folder_becomes_parquet_with_the_files_bytes(tmp_path, capsys) -> None:
    folder = tmp_path / "pets"
    rng = np.random.default_rng(1)
    for name, count in (("cat", 7), ("ant", 5)):
        (folder / name).mkdir(parents=True)
        for n in range(count):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
                folder / name / f"{n}.png")
    out = tmp_path / "pets_parquet"
    assert main(["data", "reshard", "data.source=image_folder", f"data.path={folder}",
                 "data.image_size=8", "data.channels=3", "data.num_classes=2",
                 "data.shard_rows=4", "--out", str(out)]) == 0
    index = image_folder_index(DataConfig(source="image_folder", path=str(folder),
                                          image_size=8, channels=3, num_classes=2))
    files = [(f, label) for s in index.shards("train") for f, label in zip(s.files, s.labels,
                                                                          strict=True)]
    written = _rows(str(out), "train")
    assert written.column("image").to_pylist() == [(folder / f).read_bytes() for f, _ in files]
    assert written.column("label").to_pylist() == [label for _, label in files]
    assert [s.rows for s in parquet_index(str(out)).shards("train")] == [4, 4, 4]
    schema = pq.read_schema(out / "train-00000.parquet")
    assert json.loads(schema.metadata[CLASSES_KEY]) == ["ant", "cat"]
    assert class_names(parquet_index(str(out))) == ["ant", "cat"]  # what predict prints
    plain = tmp_path / "plain.parquet"
    pq.write_table(_table(8), plain)
    assert class_names(parquet_index(str(plain))) == []  # Parquet that names no class
    assert main(["data", "check", str(out), "data.image_size=8", "data.channels=3",
                 "data.num_classes=2"]) == 0
    capsys.readouterr()
    assert main(["data", "check", str(folder), "data.image_size=8", "data.channels=3",
                 "data.num_classes=2"]) == 0  # a folder of images, given alone
    assert "train: 12 rows in" in capsys.readouterr().out


def test_reshard_refuses_what_would_lose_or_mix_data(tmp_path, capsys) -> None:
    source = tmp_path / "data" / "one.parquet"
    source.parent.mkdir()
    pq.write_table(_table(40), source)
    before = source.read_bytes()
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    cases = [
        ([str(source), "--out", str(taken)], "--out .*taken: is not empty"),
        ([str(source)], "--out FOLDER is required"),
        ([f"data.path={source.parent}", "data.source=parquet", "--out",
          str(source.parent / "inside")], "inside data.path"),
        ([str(source), "--out", str(taken / "keep.txt")], "keep.txt: is a file"),
        (["data.source=shakespeare", "--out", str(tmp_path / "text")],
         "only image data sets are resharded"),
    ]
    for args, message in cases:
        assert main(["data", "reshard", *args, "data.image_size=4", "data.channels=3"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("dbparallel: error: ") and len(err.strip().splitlines()) == 1
        assert re.search(message, err), err
    assert main(["data", "check", str(source), "--out", str(tmp_path / "o"),
                 "data.image_size=4", "data.channels=3"]) == 2
    assert "--out: data check writes nothing" in capsys.readouterr().err
    assert (taken / "keep.txt").read_text() == "mine" and sorted(taken.iterdir()) == \
        [taken / "keep.txt"]
    assert source.read_bytes() == before
    assert not (source.parent / "inside").exists() and not (tmp_path / "text").exists()


def test_a_text_table_is_refused_before_it_is_tokenized(tmp_path, monkeypatch, capsys) -> None:
    """A Parquet table of text (in its data.text_field column) is no image data set to
    reshard: refused from its schema, with no corpus tokenized into the cache for nothing."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("DBPARALLEL_CACHE", str(cache))
    table = tmp_path / "notes.parquet"
    pq.write_table(pa.table({"body": ["a few words of text, again and again. " * 8] * 30}),
                   table)
    assert main(["data", "reshard", str(table), "--out", str(tmp_path / "out"), "task=ar",
                 "data.text_field=body"]) == 2
    err = capsys.readouterr().err
    assert f"{table}: only image data sets are resharded" in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    assert not [p for p in cache.rglob("*") if p.is_file()], "a corpus was tokenized"


def test_a_reshard_that_fails_part_way_leaves_no_files(tmp_path, monkeypatch) -> None:
    source = tmp_path / "one.parquet"
    pq.write_table(_table(1000), source)
    real, pieces, written = decoded_pieces_module.read_pieces, [], []
    out = tmp_path / "out"

    def failing(*args, **kwargs):
        for piece in real(*args, **kwargs):
            pieces.append(piece)
            # the piece after next is read once the first 3 pieces of ~28 training rows were
            # written (the next one is read while one is written)
            if len(pieces) == 5:
                written.extend(out.iterdir())
                raise OSError("connection reset by peer")
            yield piece

    monkeypatch.setattr("dbparallel.data.row_groups.PIECE_BYTES", 2048)  # many pieces
    monkeypatch.setattr(decoded_pieces_module, "read_pieces", failing)
    with pytest.raises(OSError, match="connection reset"):
        main(["data", "reshard", str(source), "--out", str(out), "data.image_size=4",
              "data.channels=3", "data.shard_rows=64"])
    # a row group was written by then, into a hidden file (the data index leaves it out)
    # that takes its name once whole
    assert [re.fullmatch(r"\.train-00000\.parquet\.[0-9a-f]{12}", p.name) is not None
            for p in written] == [True]
    assert not out.exists()  # removed with the failure, and the folder the reshard made
    out.mkdir()  # a folder the user made stays, empty
    with pytest.raises(OSError, match="connection reset"):
        pieces.clear()
        main(["data", "reshard", str(source), "--out", str(out), "data.image_size=4",
              "data.channels=3", "data.shard_rows=64"])
    assert out.is_dir() and list(out.iterdir()) == []


POOLS: list[pa.MemoryPool] = []  # a pool must outlive every buffer it allocated: never freed


def test_a_row_group_is_written_a_piece_at_a_time(tmp_path) -> None:
    """40 MB of uint8 image lists rewritten as one row group: handed to Arrow's writer as one
    chunk, its peak is about 13 times the row group (levels and values of every element); in
    pieces the writer holds about the encoded row group, and the reshard about two."""
    rng = np.random.default_rng(0)
    flat = rng.integers(0, 256, (13_000, 3 * 32 * 32), dtype=np.uint8)
    table = pa.table({
        "image": pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), flat.shape[1]),
        "label": pa.array(rng.integers(0, 10, len(flat)))})
    source, out = tmp_path / "one.parquet", tmp_path / "out"
    pq.write_table(table, source)
    size = table.nbytes
    previous = pa.default_memory_pool()
    pool = pa.proxy_memory_pool(pa.system_memory_pool())
    POOLS.append(pool)
    try:
        pa.set_memory_pool(pool)
        assert main(["data", "reshard", str(source), "--out", str(out), "data.image_size=32",
                     "data.channels=3", "data.shard_rows=13000"]) == 0
    finally:
        pa.set_memory_pool(previous)
    assert pool.max_memory() < 3 * size, (pool.max_memory(), size)
    written = pq.ParquetFile(out / "train-00000.parquet")
    assert written.num_row_groups == 1 and written.metadata.num_rows == 13_000
    assert written.read().equals(table)


def test_data_resize_stores_every_photo_resized_once(tmp_path, capsys) -> None:
    """With data.resize=true the folder's photos (of any sizes, one stored sideways with an
    EXIF orientation) are written as PNGs of data.image_size: their pixels are those a block
    would have decoded from the photos, and they train without data.resize."""
    folder = tmp_path / "photos"
    rng = np.random.default_rng(2)
    for name, sizes in (("cat", [(40, 30), (12, 12), (9, 20)]), ("dog", [(64, 48), (16, 8)])):
        (folder / name).mkdir(parents=True)
        for n, (w, h) in enumerate(sizes):
            pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            exif = Image.Exif()
            exif[0x0112] = 6 if n == 0 else 1  # the first of each is shown turned
            Image.fromarray(pixels).save(folder / name / f"{n}.jpg", quality=90,
                                         exif=exif.tobytes())
    settings = ["data.image_size=8", "data.channels=3", "data.num_classes=2"]
    out = tmp_path / "small"
    assert main(["data", "reshard", str(folder), "--out", str(out), "data.resize=true",
                 *settings]) == 0
    printed = capsys.readouterr().out
    assert "resized to 8x8 RGB PNG: train on them with data.source=parquet data.path=" \
           f"{out} data.image_size=8 data.channels=3 data.num_classes=2 (no data.resize " \
           f"needed)" in printed
    written = _rows(str(out), "train")
    assert all(Image.open(io.BytesIO(b)).size == (8, 8) for b in
               written.column("image").to_pylist())
    data = DataConfig(source="image_folder", path=str(folder), resize=True, image_size=8,
                      channels=3, num_classes=2)
    index = image_folder_index(data)
    photos = pa.concat_tables(r.table for r in iter_split(index, "train", ["image", "label"]))
    expected = decode_encoded(photos.column("image"), data)
    assert np.array_equal(decode_encoded(written.column("image"), DataConfig(
        image_size=8, channels=3)), expected)
    assert written.column("label").to_pylist() == photos.column("label").to_pylist()
    assert main(["data", "check", str(out), *settings]) == 0


def test_a_bad_photo_stops_a_resizing_reshard_named(tmp_path, capsys) -> None:
    folder = tmp_path / "photos" / "cat"
    folder.mkdir(parents=True)
    Image.new("RGB", (20, 10)).save(folder / "0.png")
    (folder / "1.png").write_bytes(b"not a png")
    out = tmp_path / "small"
    assert main(["data", "reshard", str(folder.parent), "--out", str(out), "data.resize=true",
                 "data.image_size=8", "data.channels=3", "data.num_classes=1"]) == 2
    err = capsys.readouterr().err
    assert f"{folder / '1.png'}: is not a readable image" in err, err
    assert not out.exists()


def test_a_resizing_reshard_names_every_bad_photo_and_writes_nothing(tmp_path, capsys) -> None:
    """Past the first bad photo nothing more is written, but every row is still decoded, so
    that each bad one is named (in order, across row groups and splits: train, then test),
    and the folder it made is removed."""

    def png(size: tuple[int, int]) -> bytes:
        out = io.BytesIO()
        Image.new("RGB", size).save(out, "PNG")
        return out.getvalue()

    images = [png((20, 10)), b"junk", png((12, 12)), b"more junk", png((9, 30))]
    table = tmp_path / "photos.parquet"
    pq.write_table(pa.table({"image": images, "label": [0] * 5}), table, row_group_size=2)
    test = tmp_path / "test.parquet"
    pq.write_table(pa.table({"image": [b"bad", png((8, 8))], "label": [0, 0]}), test)
    data = tmp_path / "data"
    data.mkdir()
    table.rename(data / "train.parquet")
    test.rename(data / "test.parquet")
    out = tmp_path / "small"
    assert main(["data", "reshard", str(data), "--out", str(out), "data.resize=true",
                 "data.image_size=8", "data.channels=3", "data.num_classes=1"]) == 2
    err = capsys.readouterr().err
    named = [line.strip() for line in err.splitlines()[1:]]
    assert "3 bad rows:" in err.splitlines()[0], err
    assert [line.split(": column")[0] for line in named] == [
        f"{data / 'train.parquet'} row 1", f"{data / 'train.parquet'} row 3",
        f"{data / 'test.parquet'} row 0"], err
    assert not out.exists()


def test_off_a_terminal_a_reshard_says_how_far_it_is_in_lines(tmp_path, capsys,
                                                              monkeypatch) -> None:
    """As in a job's log (stderr no terminal): a line every LINE_EVERY_S, here every piece,
    and one when it is done."""
    monkeypatch.setattr("dbparallel.training.progress.LINE_EVERY_S", 0.0)
    monkeypatch.setattr("dbparallel.data.row_groups.PIECE_BYTES", 2048)  # many pieces
    source = tmp_path / "one.parquet"
    pq.write_table(_table(400), source)
    assert main(["data", "reshard", str(source), "--out", str(tmp_path / "out"),
                 "data.image_size=4", "data.channels=3", "data.shard_rows=64"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines()
             if line.startswith("reshard: ")]
    counts = [int(re.match(r"reshard: (\d+)/400 rows", line)[1]) for line in lines]
    assert len(counts) > 2 and counts == sorted(counts) and counts[-1] == 400
    assert lines[-1].endswith(tuple(f"done in {s}s" for s in range(60))), lines[-1]


def test_a_failed_rewrite_removes_its_files_and_the_hidden_ones_they_were_written_as(
        tmp_path) -> None:
    """A writer stopped outright (a task cancelled) leaves its file under the hidden name it
    was being written as: those go with the files, and nothing else of the folder's."""
    names = ["train-00000.parquet", ".train-00000.parquet.0123456789ab",
             ".train-00001.parquet.ba9876543210", ".keep", "notes.txt", ".test-00000.parquet.x"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    parquet_out.remove_written(pafs.LocalFileSystem(), str(tmp_path),
                               ["train-00000.parquet", "train-00001.parquet"], created=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".keep", ".test-00000.parquet.x",
                                                          "notes.txt"]
