"""A run directory's id (training/run_id.py), the label ``run_id`` of its metrics: kept across
resumes, another in another directory, new once a directory is deleted and trained again."""

from __future__ import annotations

import re
import shutil
import threading
from pathlib import Path

import pytest

from dbparallel.training.run_id import RUN_ID_FILE, ensure_run_id, read_run_id
from dbparallel.training.storage import DamagedFile, Storage


def test_an_id_is_drawn_once_and_read_back_ever_after(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path / "run"))
    assert read_run_id(storage) is None  # a directory no run has opened
    first = ensure_run_id(storage)
    assert re.fullmatch(r"[0-9a-f]{12}", first)
    assert (tmp_path / "run" / RUN_ID_FILE).read_text() == first + "\n"
    assert ensure_run_id(Storage(str(tmp_path / "run"))) == first  # a resume
    assert read_run_id(storage) == first
    other = ensure_run_id(Storage(str(tmp_path / "other")))  # the same run.name elsewhere
    assert other != first
    shutil.rmtree(tmp_path / "run")  # deleted, then trained again from nothing
    assert ensure_run_id(storage) not in (first, other)


def test_processes_that_start_one_new_directory_at_once_agree_on_its_id(tmp_path: Path) -> None:
    """`train --local --block B` started for every block at the same time: one id."""
    ready = threading.Barrier(8)
    ids: list[str] = []

    def start() -> None:
        storage = Storage(str(tmp_path / "run"))
        ready.wait()
        ids.append(ensure_run_id(storage))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(ids) == 8 and len(set(ids)) == 1, ids
    assert [p.name for p in (tmp_path / "run").iterdir()] == [RUN_ID_FILE]  # no temp left


def test_a_created_file_is_never_replaced(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    assert storage.create_bytes("x/a", b"first") is True
    assert storage.create_bytes("x/a", b"second") is False
    assert (tmp_path / "x" / "a").read_bytes() == b"first"


@pytest.mark.parametrize("text", ["", "not an id\n", "3F9A1C2B7D4E\n", "\xff"])
def test_a_damaged_id_is_named_with_what_to_do(tmp_path: Path, text: str) -> None:
    (tmp_path / RUN_ID_FILE).write_bytes(text.encode("latin-1"))
    storage = Storage(str(tmp_path))
    for read in (read_run_id, ensure_run_id):
        with pytest.raises(DamagedFile, match=rf"{RUN_ID_FILE}: damaged, not readable .*"
                                              r"delete it: the run's next start draws a new id"):
            read(storage)
    assert (tmp_path / RUN_ID_FILE).read_bytes() == text.encode("latin-1")  # left as it was
