"""The process that assembles a ``--local`` run, recorded in its run directory while it does.

A ``--local`` run trains its blocks one after another, releasing each block's write lease as
it finishes it, then composes and evaluates them: for that long it holds no lease, so
``dbparallel stop`` (stop_run.py) would find nothing to stop. It records itself in
``assembling.json`` for that time, named as a lease names its holder (holder.py), so the same
checks say whether it still runs and is still the process that wrote the record (not one that
took its pid over). A Ray run needs none: its blocks' leases stay held, naming its driver,
until the run ends. A record left by a killed process names a process that is gone, and the
next assembly writes over it.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

from dbparallel.errors import RunDirError
from dbparallel.training.holder import new_holder
from dbparallel.training.storage import Storage, damaged

ASSEMBLING_FILE = "assembling.json"
log = logging.getLogger(__name__)


@contextlib.contextmanager
def assembling(storage: Storage) -> Iterator[None]:
    """Record this process as the one assembling the run in ``storage`` while the block runs;
    the record is removed after, however the block ends (if it is still this process's)."""
    holder = new_holder(uuid.uuid4().hex)
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
