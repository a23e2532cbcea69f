"""The per-user cache of derived files (converted data sets, reference statistics, classifiers)."""

from __future__ import annotations

import os
from pathlib import Path

from dbparallel.errors import UserError


def cache_dir() -> Path:
    """``$DBPARALLEL_CACHE``, else ``~/.cache/dbparallel``, created if missing; a UserError
    naming the variable when it cannot be a folder."""
    given = os.environ.get("DBPARALLEL_CACHE")
    path = Path(given) if given else Path.home() / ".cache" / "dbparallel"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        where = f"DBPARALLEL_CACHE={given}" if given else f"{path} (the default cache folder)"
        raise UserError(f"{where}: cannot be created ({err.strerror or err}); set "
                        f"DBPARALLEL_CACHE to a writable folder") from None
    return path


def atomic_path(path: Path) -> Path:
    """A temporary sibling of ``path`` to write first and ``os.replace`` onto it, so readers
    in other processes never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f"{path.name}.tmp{os.getpid()}")
