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
process that is gone, and the next assembly writes over it. The process renews the record
(``renewed``) every third of its ``train.lease_timeout_s`` (``timeout_s``), as a writer renews
its lease: a record of another machine's process, which cannot be asked whether it still runs,
is an assembly cut short once it was not renewed for that long. ``dbparallel eval`` writes
nothing in the run directory (no assembly line, no report.json), and records nothing here.
"""

from __future__ import annotations

import contextlib
import logging
import threading
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
def assembling(storage: Storage, timeout_s: float, session: str = "") -> Iterator[None]:
    """Record this process as the one assembling the run in ``storage`` while the block runs,
    for ``session`` (a Ray run's ``driver_session``; default: a new one), renewed every third
    of ``timeout_s`` (its train.lease_timeout_s); the record is removed after, however the
    block ends (if it is still this process's)."""
    holder = new_holder(session or uuid.uuid4().hex)
    since = time.time()
    record = {"holder": holder, "since": since, "renewed": since, "timeout_s": timeout_s}
    storage.write_json(ASSEMBLING_FILE, record)
    done = threading.Event()
    renewer = threading.Thread(target=_renew, args=(storage, record, done), daemon=True,
                               name="assembling-renewal")
    renewer.start()
    try:
        yield
    finally:
        done.set()
        renewer.join()
        try:
            if (assembler(storage) or {}).get("holder") == holder:
                storage.delete(ASSEMBLING_FILE)
        except (OSError, RunDirError) as why:  # the assembly's own error is the one to raise
            log.warning("could not remove %s: %s", storage.uri(ASSEMBLING_FILE), why)


def _renew(storage: Storage, record: dict[str, Any], done: threading.Event) -> None:
    """Rewrite ``record`` with its ``renewed`` time every third of its ``timeout_s`` until
    ``done``, while the record is still this process's (not a later assembly's)."""
    while not done.wait(record["timeout_s"] / 3):
        try:
            if (assembler(storage) or {}).get("holder") != record["holder"]:
                return
            storage.write_json(ASSEMBLING_FILE, {**record, "renewed": time.time()})
        except (OSError, RunDirError) as why:  # the store out of reach a while: try again
            log.warning("could not renew %s: %s", storage.uri(ASSEMBLING_FILE), why)


def assembler(storage: Storage) -> dict[str, Any] | None:
    """The record of the process assembling the run (``holder``; ``since``: when it began,
    Unix time; ``renewed``: when it last renewed the record; ``timeout_s``); None where there
    is none; DamagedFile naming the file where it is no record."""
    if not storage.exists(ASSEMBLING_FILE):
        return None
    found = storage.read_json(ASSEMBLING_FILE)
    times = ("since", "renewed", "timeout_s")
    if not (isinstance(found, dict) and isinstance(found.get("holder"), str)
            and all(type(found.get(k)) in (int, float) for k in times)
            and found["timeout_s"] > 0):
        raise damaged(storage.uri(ASSEMBLING_FILE),
                      'expected {"holder", "since", "renewed", "timeout_s"}',
                      "delete it: a run's assembly writes it again")
    return found


def assembler_runs(record: dict[str, Any], now: float) -> tuple[bool | None, bool]:
    """(runs, lapsed): whether the process an ``assembler`` record names still runs at Unix
    time ``now``, as ``dbparallel stop`` asks it (holder.py), and whether it is another
    machine's (or container's) that did not renew the record for its ``timeout_s``. runs is
    False where the process is gone, its pid is another process's now, or it lapsed; None
    where it is another machine's and renewed the record since."""
    holder = record["holder"]
    runs = holder_alive(holder)
    if runs:  # its pid runs: still the process that wrote the record, not one that took it
        runs = still_runs(holder_parts(holder)[2], holder_start(holder), record["since"])
    lapsed = runs is None and now - record["renewed"] >= record["timeout_s"]
    return (False if lapsed else runs), lapsed


def assembler_is_driver(record: dict[str, Any]) -> bool:
    """Whether the process an ``assembler`` record names is a Ray run's driver."""
    session, host, pid = holder_parts(record["holder"])
    return session_driver(session) == (host, pid)
