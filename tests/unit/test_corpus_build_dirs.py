"""A corpus build killed part-way leaves its temporary folder in the cache; the next look-up
of that corpus removes it, and leaves the folder of a build that still runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dbparallel.config import DataConfig
from dbparallel.data.build_dirs import BUILDER_FILE, build_dir
from dbparallel.data.cache import cache_dir
from dbparallel.data.corpus import corpus_index, corpus_key
from dbparallel.data.text import text_source

KILLED_BUILD = """
import os, signal, sys
from pathlib import Path
from dbparallel.data.build_dirs import build_dir
tmp = build_dir(Path(sys.argv[1]))
(tmp / "train.bin").write_bytes(bytes(1 << 20))  # a token file, half-written
print(tmp, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DBPARALLEL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc to ask about a pid")
def test_a_killed_builds_folder_is_removed_and_a_running_ones_kept(tmp_path: Path) -> None:
    book = tmp_path / "book.txt"
    book.write_text("the river ran under the old bridge near the green hill. " * 200)
    data = DataConfig(source="text", path=str(book), seq_len=32)
    source = text_source(data)
    folder = cache_dir() / "corpus" / corpus_key(source.digest(), data, source.reads_field())

    killed = subprocess.run([sys.executable, "-c", KILLED_BUILD, str(folder)],
                            capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    left = Path(killed.stdout.strip())
    assert (left / "train.bin").is_file() and left.name.startswith(f".{folder.name}.")
    running = build_dir(folder)  # this process's: a build that still runs
    other = folder.parent / f".{folder.name}.unnamed"  # no builder named, lately: kept
    other.mkdir()
    (other / "train.bin").write_bytes(b"")
    old = folder.parent / f".{folder.name}.legacy"  # no builder named, untouched for 8 days
    (old / "part").mkdir(parents=True)
    (old / "train.bin").write_bytes(b"")
    week_ago = time.time() - 8 * 24 * 3600
    for path in (old / "train.bin", old / "part", old):
        os.utime(path, (week_ago, week_ago))

    index = corpus_index(data)

    assert not left.exists() and not old.exists()
    assert running.is_dir() and other.is_dir()
    assert index.meta["content"] == folder.name and (folder / "index.json").is_file()
    assert not (folder / BUILDER_FILE).exists()
    assert sorted(p.name for p in folder.parent.iterdir()) == sorted(
        [folder.name, running.name, other.name])
