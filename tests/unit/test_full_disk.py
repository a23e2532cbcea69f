"""A run directory whose disk fills while a block trains: one line that says so, exit code
1, the checkpoints written kept as listed, and the same command resumes once there is room.
The disk is a real one: a small tmpfs, where this process may mount one (root)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dbparallel import cli
from dbparallel.training.checkpoint import BlockCheckpoints
from dbparallel.training.storage import Storage

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "jobs" / "tiny_cpu.yaml")
# a state is 535 KB and a snapshot 137 KB: block 0 keeps two states and a snapshot (1.2 MB),
# and its third state, of step 60, no longer fits
SIZE = "1500k"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(disk)],
                          capture_output=True, text=True)
    if made.returncode:
        pytest.skip(f"a tmpfs cannot be mounted here: {made.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_full_disk_stops_the_run_in_one_line_and_it_resumes_with_room(
        small_disk: Path, capsys) -> None:
    run = small_disk / "run"
    command = ["train", TINY, "--local", f"run.dir={run}", "metrics.port=0",
               "train.steps=100", "train.checkpoint_every=20"]
    assert cli.main(command) == 1
    said = capsys.readouterr().err
    assert "Traceback" not in said, said
    assert re.fullmatch(
        re.escape("dbparallel: run failed: [Errno 28] No space left on device: '")
        + re.escape(str(run)) + r"/blocks/block_0/state_000000\d0\.pt" + re.escape(
            "': free space there (or raise the quota); the checkpoints written stay (run the "
            "same command again to resume)"), said.strip().splitlines()[-1]), said
    checkpoints = BlockCheckpoints(Storage(str(run)), 0)
    kept = checkpoints.steps("state")
    assert kept and all(checkpoints.readable("state", step) for step in kept)
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    assert cli.main(command) == 0, capsys.readouterr().err
    resumed = capsys.readouterr().out
    assert f"block 0 at step {kept[-1]}" in resumed, resumed
