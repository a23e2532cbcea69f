"""The per-user cache of derived files (converted data sets, reference statistics, classifiers)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$DBPARALLEL_CACHE``, else ``~/.cache/dbparallel``."""
    return Path(os.environ.get("DBPARALLEL_CACHE", Path.home() / ".cache" / "dbparallel"))


def atomic_path(path: Path) -> Path:
    """A temporary sibling of ``path`` to write first and ``os.replace`` onto it, so readers
    in other processes never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f"{path.name}.tmp{os.getpid()}")
