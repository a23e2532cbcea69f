"""Splits named by path: the common aliases (val, valid, dev, testing, mnist_test.parquet) for
Parquet files and image folders, and data sets that name some files' splits but not others'."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from dbparallel.config import DataConfig
from dbparallel.data.image_folder import image_folder_index
from dbparallel.data.parquet_index import parquet_index, split_of_path
from dbparallel.errors import DataError


def _write(path: Path, rows: int, split: list[str] | None = None) -> None:
    rng = np.random.default_rng(rows)
    columns = {"image": pa.FixedSizeListArray.from_arrays(
        pa.array(rng.integers(0, 256, rows * 4).astype(np.uint8)), 4),
        "label": pa.array(rng.integers(0, 3, rows))}
    if split is not None:
        columns["split"] = pa.array(split)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)


@pytest.mark.parametrize("train, held_out, split", [
    ("train/part-0.parquet", "val/part-0.parquet", "validation"),
    ("train-00000-of-00001.parquet", "valid-00000-of-00001.parquet", "validation"),
    ("train.parquet", "dev.parquet", "validation"),
    ("train.parquet", "testing.parquet", "test"),
    ("mnist_train.parquet", "mnist_test.parquet", "test"),
    ("training/a.parquet", "Testing/a.parquet", "test"),
])
def test_held_out_parquet_files_named_by_an_alias_are_not_trained_on(
        tmp_path: Path, train: str, held_out: str, split: str) -> None:
    _write(tmp_path / train, 10)
    _write(tmp_path / held_out, 4)
    index = parquet_index(str(tmp_path))
    assert {s: index.num_rows(s) for s in index.present()} == {"train": 10, split: 4}


def test_ordinary_file_names_name_no_split() -> None:
    for name in ("contest.parquet", "latest-data.parquet", "part-0.parquet", "d.parquet",
                 "eval.parquet", "validity_x.parquet", "attest/part-0.parquet"):
        assert split_of_path(name) is None, name
    # two words naming two splits: ambiguous, so the file trains as it always did
    for name in ("train-test.parquet", "mnist_train_val.parquet", "train_val_combined.parquet"):
        assert split_of_path(name) is None, name
    assert split_of_path("x_train_v2_train.parquet") == "train"  # one split, named twice


def test_files_named_by_split_beside_files_named_by_none_are_warned_of(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _write(tmp_path / "a" / "train.parquet", 10)
    _write(tmp_path / "a" / "holdout.parquet", 4)  # held out, but its name says nothing
    with caplog.at_level("WARNING", logger="dbparallel.data.parquet_index"):
        assert parquet_index(str(tmp_path / "a")).num_rows("train") == 14  # as before
    assert "holdout.parquet: the path names no split, beside files that do" in caplog.text
    assert "train.parquet is 'train'), so its rows train" in caplog.text
    caplog.clear()
    _write(tmp_path / "b" / "train.parquet", 10)  # a split column decides its own file
    _write(tmp_path / "b" / "extra.parquet", 4, ["train", "test", "test", "validation"])
    index = parquet_index(str(tmp_path / "b"))
    assert [index.num_rows(s) for s in ("train", "validation", "test")] == [11, 1, 2]
    _write(tmp_path / "c" / "one.parquet", 3)  # no names at all: every row trains
    _write(tmp_path / "c" / "two.parquet", 4)
    assert parquet_index(str(tmp_path / "c")).present() == ["train"]


def _images(root: Path, classes: dict[str, int]) -> None:
    for name, count in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for n in range(count):
            Image.fromarray(np.full((4, 4), n, np.uint8)).save(root / name / f"{n}.png")


def _folder_index(path: Path):
    return image_folder_index(DataConfig(source="image_folder", path=str(path), image_size=4,
                                         channels=1, num_classes=3, shard_rows=4))


def test_image_folders_accept_split_aliases(tmp_path: Path) -> None:
    _images(tmp_path / "train", {"a": 3, "b": 2})
    _images(tmp_path / "val", {"a": 1})
    _images(tmp_path / "testing", {"b": 2})
    index = _folder_index(tmp_path)
    assert {s: index.num_rows(s) for s in index.present()} == \
        {"train": 5, "validation": 1, "test": 2}
    assert {s.uri for s in index.shards("validation")} == {f"{tmp_path}/val"}
    _images(tmp_path / "dev", {"a": 1})
    with pytest.raises(DataError, match=r"/val: a second 'validation' folder beside 'dev'"):
        _folder_index(tmp_path)


def test_a_split_column_of_categories_is_read_as_its_strings(tmp_path: Path) -> None:
    """pandas writes a category column as a dictionary of strings: its values split the
    rows as a plain string column does, when indexed and when read."""
    from dbparallel.data.sources import load_table

    path = tmp_path / "pets.parquet"
    _write(path, 5, ["train", "test", "train", "train", "test"])
    table = pq.read_table(path)
    pq.write_table(table.set_column(2, "split", table.column("split").dictionary_encode()),
                   path)
    assert pa.types.is_dictionary(pq.read_schema(path).field("split").type)
    index = parquet_index(str(path))
    assert (index.num_rows("train"), index.num_rows("test")) == (3, 2)
    rows = load_table(DataConfig(source="parquet", path=str(path), image_size=2))
    labels = table.column("label").to_pylist()
    assert rows.column("label").to_pylist() == [labels[k] for k in (0, 2, 3, 1, 4)]
    assert rows.column("split").to_pylist() == ["train"] * 3 + ["test"] * 2


def test_a_split_column_names_its_splits_as_paths_do(tmp_path: Path) -> None:
    """``val``, ``Train``, ``TEST``: the names a folder or file may give a split, in any case,
    are the split column's values too, when indexed and when read."""
    from dbparallel.data import split_reader

    path = tmp_path / "aliases.parquet"
    named = ["Train", "val", "train", "TEST", "dev", "training", "testing", "valid"]
    _write(path, len(named), named)
    labels = pq.read_table(path).column("label").to_pylist()
    index = parquet_index(str(path))
    assert [index.num_rows(s) for s in ("train", "validation", "test")] == [3, 3, 2]
    read = {split: pa.concat_tables(r.table for r in split_reader.iter_split(
        index, split, ["label"])).column("label").to_pylist() for split in ("train", "test")}
    assert read == {"train": [labels[k] for k in (0, 2, 5)],
                    "test": [labels[k] for k in (3, 6)]}
    _write(path, 3, ["train", "eval", None])
    with pytest.raises(DataError, match=r"aliases.parquet: column 'split': row 1 is 'eval'; "
                                        r"allowed: train, validation, test \(any case"):
        parquet_index(str(path))
    _write(path, 3, ["train", "test", None])
    with pytest.raises(DataError, match=r"column 'split': row 2 is null; allowed: "):
        parquet_index(str(path))


def test_a_document_s_split_names_its_split_as_paths_do(tmp_path: Path) -> None:
    from dbparallel.data.corpus import corpus_index

    rows = [{"text": "abcdefgh" * 40, "split": s} for s in ("Train", "train", "val", "Test")]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    index = corpus_index(DataConfig(source="text", path=str(tmp_path / "docs.jsonl"),
                                    seq_len=8))
    assert all(index.num_rows(s) for s in ("train", "validation", "test"))
    assert index.num_rows("train") == 2 * index.num_rows("validation")
    (tmp_path / "docs.jsonl").write_text(json.dumps({"text": "abcd", "split": "eval"}) + "\n")
    with pytest.raises(DataError, match=r"field 'split' is 'eval', expected one of train, "
                                        r"validation, test \(any case"):
        corpus_index(DataConfig(source="text", path=str(tmp_path / "docs.jsonl"), seq_len=8))


def test_a_split_value_changed_since_the_index_is_refused_naming_its_file_and_row(
        tmp_path: Path) -> None:
    """A file rewritten under a run (the same rows, a split value no longer a split's name):
    the read refuses it naming the file and the file's row (here in its second row group),
    as the index would have."""
    from dbparallel.data import split_reader

    path = tmp_path / "changed.parquet"
    _write(path, 4, ["train", "test", "val", "train"])
    table = pq.read_table(path)
    pq.write_table(table, path, row_group_size=2)
    index = parquet_index(str(path))
    pq.write_table(table.set_column(2, "split", pa.array(["train", "test", "val", "eval"])),
                   path, row_group_size=2)
    with pytest.raises(DataError, match=r"changed.parquet: column 'split': row 3 is 'eval'; "
                                        r"allowed: .* \(the file changed since the run "
                                        r"indexed it\?\)"):
        for _ in split_reader.iter_split(index, "train", ["label"]):
            pass


def test_a_null_split_is_none_in_a_parquet_text_file_as_in_jsonl(tmp_path: Path) -> None:
    from dbparallel.data.corpus import corpus_index

    texts = [f"{i:02d} " + "abcdefgh" * 40 for i in range(16)]
    splits = ["test", None, *[None] * 14]  # the rest by work: 14 or more works
    pq.write_table(pa.table({"text": texts, "split": splits}), tmp_path / "docs.parquet")
    (tmp_path / "docs.jsonl").write_text("".join(
        json.dumps({"text": t, "split": s}) + "\n" for t, s in zip(texts, splits, strict=True)))
    counts = []
    for name, source in (("docs.parquet", "parquet"), ("docs.jsonl", "text")):
        index = corpus_index(DataConfig(source=source, path=str(tmp_path / name), seq_len=8))
        counts.append([index.num_rows(s) for s in ("train", "validation", "test")])
    assert counts[0] == counts[1] and all(counts[0])
