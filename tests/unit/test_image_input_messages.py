"""What a user's own image table is told when its columns are not the ones read: the column
and the fix, in one line with exit code 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dbparallel.cli import main

ROOT = Path(__file__).resolve().parents[2]
PIXELS = np.zeros((4, 64), np.uint8).tolist()  # 4 rows of 1x8x8


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DBPARALLEL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def error_of(capsys: pytest.CaptureFixture[str], path: Path) -> str:
    """The one-line error of `data check` and `train --local` on the table at ``path``,
    which must be the same."""
    errors = []
    for argv in (["data", "check", str(path)],
                 ["train", "--local", str(ROOT / "jobs" / "tiny_cpu.yaml"),
                  "data.source=parquet", f"data.path={path}", f"run.dir={path.parent / 'run'}"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"dbparallel: error: {path}: ") and err.count("\n") == 1, err
        errors.append(err)
    assert errors[0] == errors[1]
    assert not (path.parent / "run").exists()
    return errors[0]


def test_a_table_with_columns_of_its_own_names_is_told_the_names_read(tmp_path,
                                                                        capsys) -> None:
    path = tmp_path / "mine.parquet"
    pq.write_table(pa.table({"picture": PIXELS, "cls": [0, 1, 2, 3]}), path)
    err = error_of(capsys, path)
    assert "column 'image' is missing; the table has ['picture', 'cls']" in err
    assert "a column named 'image'" in err and "an integer column named 'label'" in err
    assert "rename the columns that hold them" in err


def test_labels_that_are_class_names_are_told_to_become_ids(tmp_path, capsys) -> None:
    path = tmp_path / "named.parquet"
    pq.write_table(pa.table({"image": PIXELS, "label": ["cat", "dog", "ant", "cat"]}), path)
    err = error_of(capsys, path)
    assert "column 'label': expected integers, the class ids 0 .. data.num_classes-1, got " \
           "string: map the class names to ids" in err
    assert "data.source=image_folder" in err
    pq.write_table(pa.table({"image": PIXELS, "label": [0.0, 1.0, 2.0, 3.0]}), path)
    assert "got double: cast the column to an integer type (pandas makes integers with a " \
           "missing value floats: drop or fill the rows without a label first)" in \
        error_of(capsys, path)


def test_images_as_nested_lists_are_told_to_be_flat(tmp_path, capsys) -> None:
    path = tmp_path / "nested.parquet"
    nested = np.zeros((4, 8, 8), np.uint8).tolist()
    pq.write_table(pa.table({"image": nested, "label": [0, 1, 2, 3]}), path)
    assert "one flat list of C*H*W numbers in (C, H, W) order" in error_of(capsys, path)


def test_a_table_of_text_is_refused_to_an_image_task_before_it_is_tokenized(
        tmp_path, capsys, cache) -> None:
    path = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"text": ["To be, or not to be, that is the question. " * 20] * 40}),
                   path)
    for task in ("dit", "vit"):
        for argv in (["data", "check", str(path), f"task={task}"],
                     ["train", "--local", str(ROOT / "jobs" / "tiny_cpu.yaml"), f"task={task}",
                      "data.source=parquet", f"data.path={path}",
                      f"run.dir={tmp_path / 'run'}"]):
            assert main(argv) == 2
            assert capsys.readouterr().err == (
                f"dbparallel: error: task={task} trains on images, and {path} holds text (a "
                f"'text' column, data.text_field): set task=mdm, ar or looped to train a "
                f"language model on it\n")
    assert not (cache / "corpus").exists()  # refused before it was tokenized
    assert not (tmp_path / "run").exists()
