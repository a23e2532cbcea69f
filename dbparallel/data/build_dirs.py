"""The temporary folders that corpus builds write into (data/corpus.py), and removing those of
builds that were killed.

A build writes ``cache_dir()/corpus/.<key>.<random>/`` and renames it to ``<key>/`` once
complete. A build killed part-way (SIGKILL, the machine's OOM killer) never reaches its
cleanup, so its folder, as large as the token files it had written, would stay in the cache
for good. Every build folder therefore names its builder in ``builder.json``: host, where its
pid means something (the kernel's boot and the pid namespace) and when the process started.
The next look-up of the same corpus on that host and pid namespace removes the folders whose
builder no longer runs; a folder whose builder cannot be asked about (another machine or
container, or no ``/proc``) is left alone. A folder that names no builder was made by a
version that did not name them, or is a build in its first instant (a build names its builder
as it makes the folder): one that nothing has touched for ``UNNAMED_AGE_S`` is the former,
and is removed too, wherever it was made.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

from dbparallel.process_id import proc_stat, process_space

log = logging.getLogger(__name__)

BUILDER_FILE = "builder.json"
UNNAMED_AGE_S = 7 * 24 * 3600  # a build folder naming no builder, untouched this long: removed


def _start(pid: int | str) -> str | None:
    """When process ``pid`` started (``process_start``); None where it does not run (gone,
    or a zombie)."""
    stat = proc_stat(pid)
    return None if not stat or stat[0] in ("Z", "X") else stat[19]


def build_dir(folder: Path) -> Path:
    """A new, empty temporary sibling of ``folder`` to build into, its builder (this
    process) named in it."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    builder = {"host": socket.gethostname(), "space": process_space(), "pid": os.getpid(),
               "start": _start("self") or ""}
    (tmp / BUILDER_FILE).write_text(json.dumps(builder))
    return tmp


def _abandoned(tmp: Path, here: tuple[str, str]) -> int | None:
    """The pid of the builder of ``tmp`` where it is a process of this host and pid namespace
    that no longer runs; None otherwise (it runs, cannot be asked, or is not named)."""
    try:
        builder = json.loads((tmp / BUILDER_FILE).read_text())
        host, space, pid = builder["host"], builder["space"], int(builder["pid"])
        start = str(builder["start"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not space or (host, space) != here or not start:
        return None
    return pid if _start(pid) != start else None


def remove_abandoned(folder: Path) -> None:
    """Remove the temporary build folders of ``folder`` left by killed builds of this host."""
    here = (socket.gethostname(), process_space())
    if not here[1] or not folder.parent.is_dir():
        return
    for tmp in folder.parent.glob(f".{folder.name}.*"):
        pid = _abandoned(tmp, here) if tmp.is_dir() else None
        if pid is not None:
            shutil.rmtree(tmp, ignore_errors=True)
            log.info("removed %s, the unfinished build of pid %d, which no longer runs",
                     tmp, pid)
        elif tmp.is_dir() and _unnamed_and_old(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
            log.info("removed %s, an unfinished build that names no builder, untouched for "
                     "%d days", tmp, UNNAMED_AGE_S // 86400)


def _unnamed_and_old(tmp: Path) -> bool:
    """Whether ``tmp`` names no builder and neither it nor anything directly in it was
    changed for ``UNNAMED_AGE_S`` seconds."""
    try:
        if (tmp / BUILDER_FILE).exists():
            return False
        newest = max([tmp.stat().st_mtime, *(p.stat().st_mtime for p in tmp.iterdir())])
    except OSError:  # removed meanwhile, or not readable: not ours to judge
        return False
    return time.time() - newest > UNNAMED_AGE_S
