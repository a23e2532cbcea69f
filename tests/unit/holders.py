"""Helpers of the tests that stop real training processes (``dbparallel stop``)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from dbparallel import cli
from dbparallel.training.assembling import ASSEMBLING_FILE
from dbparallel.training.holder import process_space
from dbparallel.training.storage import Storage

HANG_S = 120  # a hang guard only, never a timing claim


def _wait(done: Callable[[], bool], proc: subprocess.Popen, what: str) -> None:
    """Return once ``done()``, failing if ``proc`` ends first (or in HANG_S)."""
    deadline = time.monotonic() + HANG_S
    while proc.poll() is None and time.monotonic() < deadline:
        if done():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}; the process ended with {proc.poll()}")


def wait_training(block: Path, proc: subprocess.Popen) -> None:
    """Return once ``proc`` holds the lease of the block in folder ``block`` and has written
    a checkpoint (past its start, which test_reliability.py stops the same way), failing if
    ``proc`` ends."""
    lease, manifest = block / "lease.json", block / "manifest.json"
    _wait(lambda: manifest.exists() and bool(json.loads(lease.read_text())["holder"]), proc,
          f"{lease} never held")


def wait_assembling(run: Path, proc: subprocess.Popen) -> None:
    """Return once ``proc`` records itself assembling the run in ``run``, failing if it
    ends first."""
    _wait((run / ASSEMBLING_FILE).exists, proc, f"{run / ASSEMBLING_FILE} never written")


@contextlib.contextmanager
def ended(proc: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """``proc``, killed (if it still runs) and waited for however the block ends."""
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


@dataclass
class Stopped:
    """What ``dbparallel stop`` said and did (``code``, its ``out`` lines), and what the
    process it stopped wrote (``stdout``, ``err``)."""

    code: int
    out: list[str]
    stdout: str
    err: str


def stop(run: Path, proc: subprocess.Popen, capsys) -> Stopped:
    """``dbparallel stop RUN --wait HANG_S`` of the run in ``run``, then ``proc``'s end."""
    code = cli.main(["stop", str(run), "--wait", str(HANG_S)])
    out = capsys.readouterr().out.splitlines()
    stdout, err = proc.communicate(timeout=HANG_S)
    return Stopped(code, out, stdout or "", err or "")


def write_assembly(storage: Storage, host: str, pid: int | str, start: str = "",
                   renewed_ago_s: float = 0.0, timeout_s: float = 60.0) -> None:
    """An assembling.json naming pid ``pid`` of ``host`` (of this process space), which
    started at ``start`` (process_start) where given, renewed ``renewed_ago_s`` ago with its
    writer's train.lease_timeout_s ``timeout_s``."""
    holder = f"0123abcd/{host}/{pid}/0123abcd/{process_space()}" + (f"/{start}" * bool(start))
    renewed = time.time() - renewed_ago_s
    storage.write_json(ASSEMBLING_FILE, {"holder": holder, "since": renewed,
                                         "renewed": renewed, "timeout_s": timeout_s})
