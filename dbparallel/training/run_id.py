"""A run directory's id: a short random name drawn once, by the first run that opens the
directory, and kept in it (``run_id.txt``). Every Prometheus series of the run carries it as
the label ``run_id`` beside ``run`` (run.name), so that runs of one name stay apart.

Why a random id written once, and not something the directory holds already: run.name is
shared by every run of a recipe, the config hash by every run of one network and data, and the
driver's session changes at every resume. The directory's path is the same for a directory
deleted and trained again, and is spelled otherwise by processes that share one directory
(relative or absolute, another machine's mount point, a URI's query); an object store keeps no
creation time. An id drawn when the file is absent and read back ever after is kept across
resumes and restarts (a restarted block's counters go on under the same labels), differs
between two directories of one run.name, and is new once a directory is deleted and trained
from nothing. A copy of a directory keeps it, as it keeps the checkpoints; deleting the file
gives the run a new id at its next start.

A run reads it (or draws it) right after ``open_run``: a Ray run's driver hands it to every
actor and worker it starts (restarted ones too), a ``--local`` process records with it itself.
On a local disk the file is created exclusively (a temp file linked into place), so block
processes that start a new directory at once (``--local --block``) agree on one id. An object
store has no conditional write through ``pyarrow.fs``: two processes that create the directory
in the same instant may each keep their own id until they restart (the file keeps the later).
"""

from __future__ import annotations

import re
import secrets

from dbparallel.training.storage import DamagedFile, Storage, damaged

RUN_ID_FILE = "run_id.txt"
ID_HEX = 12  # characters: 48 random bits
_FORM = re.compile(rf"[0-9a-f]{{{ID_HEX}}}")
REMEDY = "delete it: the run's next start draws a new id (its metrics then carry that one)"


def read_run_id(storage: Storage) -> str | None:
    """The id of the run directory in ``storage``; None where it has none (not started yet,
    or trained before runs had ids). DamagedFile naming run_id.txt where it holds no id."""
    if not storage.exists(RUN_ID_FILE):
        return None
    try:
        text = storage.read_text(RUN_ID_FILE)
    except DamagedFile as err:
        raise damaged(err.where, err.why, REMEDY) from None
    except FileNotFoundError:  # deleted since
        return None
    run_id = text.strip()
    if not _FORM.fullmatch(run_id):
        raise damaged(storage.uri(RUN_ID_FILE), f"expected {ID_HEX} hex digits, found "
                      f"{text[:40]!r}", REMEDY)
    return run_id


def ensure_run_id(storage: Storage) -> str:
    """The id of the run directory in ``storage``, drawn and written first where it has none
    (the directory's first run, or one trained before runs had ids)."""
    found = read_run_id(storage)
    if found is not None:
        return found
    drawn = secrets.token_hex(ID_HEX // 2)
    storage.create_bytes(RUN_ID_FILE, (drawn + "\n").encode())
    found = read_run_id(storage)  # whoever created it first: this process or another
    return drawn if found is None else found  # (None: deleted since; the next start draws)
