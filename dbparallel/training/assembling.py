"""The process that assembles a run, recorded in its run directory while it does.

Once every block is trained, a ``--local`` run composes and evaluates them, holding no block's
write lease any more. It records itself in ``assembling.json`` for that time
(process_record.py: named as a lease names its holder, renewed as a lease is), and writes
report.json before it removes the record, so that the run reads ``being assembled`` until it
is ``finished``. A Ray run's driver records itself the same way while its assembler actor
makes the final assembly, under the run's session (the stop that its blocks' leases, still
held, lead to is the same process); its assemblies during training, while blocks train, are
not recorded. ``dbparallel status`` shows the run being assembled from the record, and one
whose process is gone as an assembly cut short; ``dbparallel stop`` (stop_run.py) signals the
process it names. A record left by a killed process names a process that is gone, and the
next assembly writes over it. A ``--local`` process is also recorded in ``running/`` for its
whole run (running.py), which neither reads as an assembly. ``dbparallel eval`` writes
nothing in the run directory (no assembly line, no report.json), and records nothing here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from dbparallel.training.process_record import read_record, recorded
from dbparallel.training.storage import Storage

ASSEMBLING_FILE = "assembling.json"


@contextlib.contextmanager
def assembling(storage: Storage, timeout_s: float, session: str = "") -> Iterator[None]:
    """Record this process as the one assembling the run in ``storage`` while the block runs,
    for ``session`` (a Ray run's ``driver_session``; default: a new one), renewed every third
    of ``timeout_s`` (its train.lease_timeout_s); the record is removed after, however the
    block ends (if it is still this process's)."""
    with recorded(storage, ASSEMBLING_FILE, timeout_s, session):
        yield


def assembler(storage: Storage) -> dict[str, Any] | None:
    """The record of the process assembling the run (``holder``; ``since``: when it began,
    Unix time; ``renewed``: when it last renewed the record; ``timeout_s``); None where there
    is none; DamagedFile naming the file where it is no record."""
    return read_record(storage, ASSEMBLING_FILE, "delete it: a run's assembly writes it again")

