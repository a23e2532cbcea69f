"""Which code a result was measured with: the commit checked out (and whether the working tree
differed from it), or, where the code runs without its git history (a copy of the working
tree on a device machine), the commit named by DBPARALLEL_COMMIT; and when it was measured."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def provenance() -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None, "measured_at": UTC ISO time}``."""
    commit, dirty = os.environ.get("DBPARALLEL_COMMIT") or None, None
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=30)
        if head.returncode == 0:
            commit = head.stdout.strip()
            status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                    cwd=ROOT, capture_output=True, text=True, timeout=30)
            dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):  # no git here: the environment's word
        pass
    return {"commit": commit, "dirty": dirty,
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
