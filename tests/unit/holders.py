"""Helpers of the tests that stop real training processes (``dbparallel stop``)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

HANG_S = 120  # a hang guard only, never a timing claim


def wait_training(block: Path, proc: subprocess.Popen) -> None:
    """Return once ``proc`` holds the lease of the block in folder ``block`` and has written
    a checkpoint (past its start, which test_reliability.py stops the same way), failing if
    ``proc`` ends."""
    lease, manifest = block / "lease.json", block / "manifest.json"
    deadline = time.monotonic() + HANG_S
    while proc.poll() is None and time.monotonic() < deadline:
        if manifest.exists() and json.loads(lease.read_text())["holder"]:
            return
        time.sleep(0.1)
    raise AssertionError(f"{lease} never held; the process ended with {proc.poll()}")
