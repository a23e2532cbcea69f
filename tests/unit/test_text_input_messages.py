"""What a user's own text corpus is told when it cannot be read: the file, the line and the fix."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dbparallel.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DBPARALLEL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def error_of(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The one-line error of a command that exits 2."""
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("dbparallel: error: "), err
    return err


def test_a_text_task_names_a_parquet_table_without_a_text_column(tmp_path, capsys) -> None:
    path = tmp_path / "notes_content.parquet"
    pq.write_table(pa.table({"content": ["To be, or not to be. " * 20] * 4}), path)
    rename = "rename the column that holds them to 'text'"
    for argv in (["data", "check", "task=mdm", "data.source=parquet", f"data.path={path}"],
                 ["data", "check", str(path), "task=ar"],
                 ["train", "--local", str(ROOT / "jobs" / "ar_shakespeare_tiny.yaml"),
                  "data.source=parquet", f"data.path={path}", f"run.dir={tmp_path / 'run'}"]):
        err = error_of(capsys, *argv)
        assert f"{path}: column 'text' is missing; the table has ['content']" in err, argv
        assert rename in err and "'image'" not in err
    assert not (tmp_path / "run").exists()
    folder = tmp_path / "tables"  # a later file of a folder: named as it is read
    folder.mkdir()
    pq.write_table(pa.table({"text": ["To be, or not to be. " * 20] * 4}), folder / "a.parquet")
    pq.write_table(pa.table({"content": ["x"]}), folder / "b.parquet")
    err = error_of(capsys, "data", "check", str(folder), "task=ar")
    assert f"{folder / 'b.parquet'}: column 'text' is missing; the table has ['content']" in err
    assert rename in err
