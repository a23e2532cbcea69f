"""The process that assembles a run, recorded in its run directory while it does.

A ``--local`` run trains its blocks one after another, releasing each block's write lease as
it finishes it, then composes and evaluates them: for that long it holds no lease, so
``dbparallel stop`` (stop_run.py) would find nothing to stop. It records itself in
``assembling.json`` for that time, named as a lease names its holder (holder.py), so the same
checks say whether it still runs and is still the process that wrote the record (not one that
took its pid over). A Ray run's driver records itself the same way while its assembler actor
makes the final assembly, under the run's session (the stop that its blocks' leases, still
held, lead to is the same process); its assemblies during training, while blocks train, are
not recorded. ``dbparallel status`` shows the run being assembled from the record, and one
whose process is gone as an assembly cut short. A record left by a killed process names a
process that is gone, and the next assembly writes over it. ``dbparallel eval`` writes
nothing in the run directory (no assembly line, no report.json), and records nothing here.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

from dbparallel.errors import RunDirError
from dbparallel.training.holder import (
    holder_alive,
    holder_parts,
    holder_start,
    new_holder,
    session_driver,
    still_runs,
)
from dbparallel.training.storage import Storage, damaged

ASSEMBLING_FILE = "assembling.json"
log = logging.getLogger(__name__)


@contextlib.contextmanager
def assembling(storage: Storage, session: str = "") -> Iterator[None]:
    """Record this process as the one assembling the run in ``storage`` while the block runs,
    for ``session`` (a Ray run's ``driver_session``; default: a new one); the record is
    removed after, however the block ends (if it is still this process's)."""
    holder = new_holder(session or uuid.uuid4().hex)
    storage.write_json(ASSEMBLING_FILE, {"holder": holder, "since": time.time()})
    try:
        yield
    finally:
        try:
            if (assembler(storage) or {}).get("holder") == holder:
                storage.delete(ASSEMBLING_FILE)
        except (OSError, RunDirError) as why:  # the assembly's own error is the one to raise
            log.warning("could not remove %s: %s", storage.uri(ASSEMBLING_FILE), why)


def assembler(storage: Storage) -> dict[str, Any] | None:
    """The record of the process assembling the run (``holder``, and ``since``: when it began,
    Unix time); None where there is none; DamagedFile naming the file where it is no record."""
    if not storage.exists(ASSEMBLING_FILE):
        return None
    found = storage.read_json(ASSEMBLING_FILE)
    if not (isinstance(found, dict) and isinstance(found.get("holder"), str)
            and type(found.get("since")) in (int, float)):
        raise damaged(storage.uri(ASSEMBLING_FILE), 'expected {"holder", "since"}',
                      "delete it: a run's assembly writes it again")
    return found


def assembler_runs(record: dict[str, Any]) -> bool | None:
    """Whether the process an ``assembler`` record names still runs, as ``dbparallel stop``
    asks it (holder.py): False where it is gone or its pid is another process's now; None
    where it cannot be asked from here (another machine's or container's)."""
    holder = record["holder"]
    runs = holder_alive(holder)
    if runs:  # its pid runs: still the process that wrote the record, not one that took it
        runs = still_runs(holder_parts(holder)[2], holder_start(holder), record["since"])
    return runs


def assembler_is_driver(record: dict[str, Any]) -> bool:
    """Whether the process an ``assembler`` record names is a Ray run's driver."""
    session, host, pid = holder_parts(record["holder"])
    return session_driver(session) == (host, pid)
