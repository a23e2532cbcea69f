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


def test_a_text_task_reads_a_folder_of_text_with_a_stray_image_as_text(tmp_path,
                                                                        capsys) -> None:
    folder = tmp_path / "folder_binary"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.txt").write_text(f"document {i}, some text here\n" * 40)
    stray = folder / "image.png"
    stray.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(32))
    for argv in ([str(folder), "task=ar"],
                 [str(ROOT / "jobs" / "ar_shakespeare_tiny.yaml"), str(folder)]):  # its task
        err = error_of(capsys, "data", "check", *argv)
        assert f"data.path: '{stray}' is an image, not text" in err, argv
        assert f"move it out of '{folder}'" in err
    err = error_of(capsys, "data", "check", "task=ar", "data.source=text",
                   f"data.path={stray}")
    assert f"data.path: '{stray}' is an image, not text" in err
    assert "move it out" not in err  # a file given alone
    stray.unlink()
    assert main(["data", "check", str(folder), "task=ar", "data.seq_len=32",
                 "sample.prompt_len=8", "sample.gen_len=8"]) == 0
    assert "train: " in capsys.readouterr().out


def test_a_bare_path_is_guessed_by_the_task_and_by_its_name() -> None:
    from dbparallel.cli_data import _bare_source, _text_task

    assert _text_task(["task=ar"]) and _text_task([str(ROOT / "jobs" / "mdm_shakespeare.yaml")])
    assert not _text_task([str(ROOT / "jobs" / "mdm_shakespeare.yaml"), "task=vit"])
    assert not _text_task(["data.path=/d"])  # the default task, dit
    assert _bare_source("s3://bucket/corpus.jsonl.gz?endpoint_override=h:9000") == "text"
    assert _bare_source("s3://bucket/data/") == _bare_source("gs://b/t.parquet") == "parquet"


def test_an_image_task_still_reads_a_folder_of_images(tmp_path) -> None:
    from dbparallel.cli_data import _bare_source

    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "1.png").write_bytes(b"\x89PNG")
    (tmp_path / "notes.txt").write_text("about the cats")
    assert _bare_source(str(tmp_path)) == "image_folder"
    assert _bare_source(str(tmp_path), text_task=True) == "text"
    (tmp_path / "t.parquet").write_bytes(b"PAR1")
    assert _bare_source(str(tmp_path), text_task=True) == "parquet"
