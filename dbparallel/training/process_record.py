"""A process recorded in a run directory while it does something there that holds no block's
write lease: the run's assembly (assembling.py), a ``--local`` process from its data check to
its end (running.py).

The record names the process as a lease names its holder (holder.py), so the same checks say
whether it still runs and is still the process that wrote the record (not one that took its
pid over). The process renews the record (``renewed``) every third of its
``train.lease_timeout_s`` (``timeout_s``), as a writer renews its lease: a record of another
machine's process, which cannot be asked whether it still runs, counts as gone once it was not
renewed for that long. So does one of a process of this machine that still runs but did not
renew it for that long: it renews the record for as long as it does what it records, so the
record is one whose removal failed at its end (a store read-only or out of reach then) of a
process that lives on, e.g. a program that called ``dbparallel.train`` and went on, or one
that could not write the run directory for that long, as a writer's lease lapses; it refuses
nothing, reads as no assembly, and ``dbparallel stop`` signals nothing for it. A record
deleted under its process while it runs is written back at its next renewal: the process
still does what it records. The record is removed when the
process is done, however it stops; one left by a killed process names a process that is gone.
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

log = logging.getLogger(__name__)


class Record:
    """A record this process keeps at ``path`` of ``storage`` (its ``fields``), rewritten as
    it renews it and as its fields change, one write at a time."""

    def __init__(self, storage: Storage, path: str, fields: dict[str, Any]):
        self.storage, self.path, self.fields = storage, path, fields
        self._lock = threading.Lock()

    def update(self, **fields: Any) -> None:
        """Rewrite the record with ``fields`` changed (and renewed now); one that is gone
        (deleted under this process) is written back."""
        with self._lock:
            self.fields.update(fields, renewed=time.time())
            self.storage.write_json(self.path, self.fields)

    def renew(self) -> bool:
        """Rewrite the record renewed now, also where it is gone: this process still does
        what it records (someone deleted the record, or cleared an object store's empty
        directory at the instant it was written: storage.py ``remove_empty_dir``). False,
        writing nothing, where another process's record is there now (the next
        assembly's)."""
        with self._lock:
            found = read_record(self.storage, self.path)
            if found is not None and found.get("holder") != self.fields["holder"]:
                return False
            self.fields["renewed"] = time.time()
            self.storage.write_json(self.path, self.fields)
            return True


@contextlib.contextmanager
def recorded(storage: Storage, path: str, timeout_s: float, session: str = "",
             **more: Any) -> Iterator[Record]:
    """Record this process at ``path`` of ``storage`` while the block runs, for ``session``
    (default: a new one), with the fields ``more``, renewed every third of ``timeout_s``;
    the record (yielded) is removed after, however the block ends, if it is still this
    process's."""
    holder = new_holder(session or uuid.uuid4().hex)
    since = time.time()
    record = Record(storage, path, {"holder": holder, "since": since, "renewed": since,
                                    "timeout_s": timeout_s, **more})
    storage.write_json(path, record.fields)
    done = threading.Event()
    renewer = threading.Thread(target=_renew, args=(record, done), daemon=True,
                               name=f"{path}-renewal")
    renewer.start()
    try:
        yield record
    finally:
        done.set()
        renewer.join()
        try:
            if (read_record(storage, path) or {}).get("holder") == holder:
                storage.delete(path)
        except (OSError, RunDirError) as why:  # the block's own error is the one to raise
            log.warning("could not remove %s: %s", storage.uri(path), why)


def _renew(record: Record, done: threading.Event) -> None:
    """Renew ``record`` every third of its ``timeout_s`` until ``done``, while the record
    there is this process's (or none)."""
    while not done.wait(record.fields["timeout_s"] / 3):
        try:
            if not record.renew():
                return
        except (OSError, RunDirError) as why:  # the store out of reach a while: try again
            log.warning("could not renew %s: %s", record.storage.uri(record.path), why)


def read_record(storage: Storage, path: str, remedy: str = "delete it") -> dict[str, Any] | None:
    """The record at ``path`` (``holder``; ``since``: when the process began, Unix time;
    ``renewed``: when it last renewed the record; ``timeout_s``; the fields it was given);
    None where there is none; DamagedFile naming the file, with ``remedy``, where it is no
    record."""
    if not storage.exists(path):
        return None
    found = storage.read_json(path)
    times = ("since", "renewed", "timeout_s")
    if not (isinstance(found, dict) and isinstance(found.get("holder"), str)
            and all(type(found.get(k)) in (int, float) for k in times)
            and found["timeout_s"] > 0):
        raise damaged(storage.uri(path), 'expected {"holder", "since", "renewed", "timeout_s"}',
                      remedy)
    return found


def record_runs(record: dict[str, Any], now: float) -> tuple[bool | None, bool]:
    """(runs, lapsed): whether the process a record names still does what it records at
    Unix time ``now``, as ``dbparallel stop`` asks it (holder.py), and whether it did not
    renew the record for its ``timeout_s`` (the module's docstring: another machine's or
    container's, or one of this machine that lives on). runs is False where the process is
    gone, its pid is another process's now, or it lapsed; None where it is another machine's
    and renewed the record since."""
    holder = record["holder"]
    runs = holder_alive(holder)
    if runs:  # its pid runs: still the process that wrote the record, not one that took it
        runs = still_runs(holder_parts(holder)[2], holder_start(holder), record["since"])
    lapsed = runs is not False and now - record["renewed"] >= record["timeout_s"]
    return (False if lapsed else runs), lapsed


def record_driver(record: dict[str, Any]) -> bool:
    """Whether the process a record names is a Ray run's driver: its session
    (``driver_session``) names that process itself."""
    session, host, pid = holder_parts(record["holder"])
    return session_driver(session) == (host, pid)
