"""The parts of a rewrite (data/reshard_parts.py), each written alone, make the files the
single pass makes, and a part with a bad row names it and leaves nothing."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from dbparallel.config import DataConfig
from dbparallel.data.image_folder import image_folder_index
from dbparallel.data.parquet_index import parquet_index
from dbparallel.data.parquet_out import GROUPS_PER_FILE, check_empty, out_metadata
from dbparallel.data.reshard import Resize, reshard
from dbparallel.data.reshard_parts import parts_of, write_part
from dbparallel.data.tables import resolve_path


def _pixels(rows: int) -> pa.Table:
    rng = np.random.default_rng(0)
    flat = rng.integers(0, 256, (rows, 3 * 4 * 4), dtype=np.uint8)
    return pa.table({
        "image": pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), flat.shape[1]),
        "label": pa.array(rng.integers(0, 10, rows)),
        "split": pa.array(np.where(np.arange(rows) % 4 == 3, "test", "train")),
    })


def _parts(index, out, shard_rows: int, rewrite=None) -> list:
    fs, root = resolve_path(str(out))
    check_empty(fs, root, str(out))
    return [write_part(index, p, str(out), shard_rows, rewrite, out_metadata(index, p.split))
            for p in parts_of(index, shard_rows)]


def _same_files(one, other) -> None:
    names = sorted(p.name for p in one.iterdir())
    assert names == sorted(p.name for p in other.iterdir())
    for name in names:
        a, b = pq.ParquetFile(one / name), pq.ParquetFile(other / name)
        assert [a.metadata.row_group(g).num_rows for g in range(a.num_row_groups)] == \
            [b.metadata.row_group(g).num_rows for g in range(b.num_row_groups)]
        assert a.read().equals(b.read())
        assert a.schema_arrow.equals(b.schema_arrow, check_metadata=True)


def test_parts_written_alone_are_the_single_pass_s_files(tmp_path) -> None:
    source = tmp_path / "one.parquet"
    pq.write_table(_pixels(1000), source, row_group_size=300)  # groups cut across parts
    index = parquet_index(str(source))
    shard_rows = 10
    parts = parts_of(index, shard_rows)
    per_file = GROUPS_PER_FILE * shard_rows  # 160
    assert [(p.split, p.number, p.start, p.stop) for p in parts] == \
        [("train", n, n * per_file, min((n + 1) * per_file, 750)) for n in range(5)] + \
        [("test", n, n * per_file, min((n + 1) * per_file, 250)) for n in range(2)]
    done = _parts(index, tmp_path / "parts", shard_rows)
    assert [d.file for d in done] == [p.name for p in parts]
    assert all(not d.bad and d.stats is None for d in done)
    assert sum(d.row_groups for d in done) == 75 + 25
    reshard(index, str(tmp_path / "single"), shard_rows)
    _same_files(tmp_path / "parts", tmp_path / "single")


def test_parts_of_files_whose_footers_differ_carry_the_single_pass_s_footers(tmp_path) -> None:
    """Data written by pandas, a file at a time: each file's footer says how many rows it
    held. Every file written carries the footer of the split's first, as the single pass
    writes it, whichever file a part's first rows come from."""
    source = tmp_path / "data"
    source.mkdir()
    rows = _pixels(400)
    for n in range(2):
        part = rows.slice(200 * n, 200).drop_columns(["split"])
        pq.write_table(part.replace_schema_metadata({b"pandas": f"rows {n * 200}..".encode()}),
                       source / f"part-{n}.parquet", row_group_size=50)
    index = parquet_index(str(source))
    _parts(index, tmp_path / "parts", 10)  # the third file's rows come from part-1
    reshard(index, str(tmp_path / "single"), 10)
    assert pq.read_schema(tmp_path / "single" / "train-00002.parquet").metadata[b"pandas"] \
        == b"rows 0.."
    _same_files(tmp_path / "parts", tmp_path / "single")


def test_a_part_of_an_image_folder_names_its_bad_files_and_leaves_nothing(tmp_path) -> None:
    folder = tmp_path / "photos"
    rng = np.random.default_rng(1)
    for name in ("ant", "cat"):
        (folder / name).mkdir(parents=True)
        for n in range(20):
            Image.fromarray(rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)).save(
                folder / name / f"{n:02d}.png")
    data = DataConfig(source="image_folder", path=str(folder), image_size=4, channels=3,
                      num_classes=2, resize=True, shard_rows=2)
    index = image_folder_index(data)  # the files in a seeded shuffle
    files = [f for shard in index.shards("train") for f in shard.files]
    for row in (5, 9, 35):  # two in the first part (32 rows to a file), one in the second
        (folder / files[row]).write_bytes(b"not a png")
    done = _parts(index, tmp_path / "parts", 2, Resize(data))
    assert [[line.split(": ")[0] for line in d.bad] for d in done] == \
        [[str(folder / files[5]), str(folder / files[9])], [str(folder / files[35])]]
    assert [d.file for d in done] == [None, None]
    assert list((tmp_path / "parts").iterdir()) == []
    (folder / files[35]).write_bytes((folder / files[0]).read_bytes())
    second = write_part(index, parts_of(index, 2)[1], str(tmp_path / "parts"), 2,
                        Resize(data), {})
    assert second.file == "train-00001.parquet" and not second.bad
    kept = [second.file]
    pngs = pq.read_table(tmp_path / "parts" / kept[0]).column("image").to_pylist()
    assert all(Image.open(io.BytesIO(b)).size == (4, 4) for b in pngs)
