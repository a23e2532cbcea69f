"""A block's last failure, kept in its directory (``blocks/block_<b>/failed.json``) so that
``dbparallel status`` can say why a block stopped long after the driver's log is gone (a job
on a cluster, a notebook closed).

The block's writer (the holder of its lease) records an error of its own training: a bad row,
a damaged checkpoint, an error of the network or the device; and one of its start, met once it
holds the lease (every writer takes it first): the pinned data index damaged or disagreeing
with the data here, a checkpoint it cannot resume from. A process refused the lease (another
one holds the block) records nothing: the block's state is its holder's. On Ray the driver
records a block it gave up: its process lost more often than train.max_restarts allows,
stalled past its restarts, or unreachable past its retries; and an error met by a replica of a
block's group other than rank 0 (its writer), which writes nothing in the block's directory,
at the step it was training or at its start. A stop asked for (Ctrl-C, SIGTERM, the driver
ending the run) and a lease another process took over are not failures. The next process that
takes the block's lease removes the record: the block is no longer failed once it trains
again.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from dbparallel.training.checkpoint import BlockCheckpoints, block_dir
from dbparallel.training.holder import this_process
from dbparallel.training.lease import BlockLease, LeaseLost
from dbparallel.training.storage import Storage

FAILURE_FILE = "failed.json"
MAX_CHARS = 2000  # of the error's text: the first lines say what failed
log = logging.getLogger(__name__)


def _path(block: int) -> str:
    return f"{block_dir(block)}/{FAILURE_FILE}"


def record_failure(storage: Storage, block: int, step: int | None,
                   err: BaseException, taken: bool = False) -> bool:
    """Keep ``err``, met taking ``step`` (its metrics line's number; None: at the block's
    start, before any step), or after it (``taken``: writing its held-out loss, history or
    checkpoint), as the block's last failure; whether it is one (not a stop asked for,
    which is no Exception, nor a lease another writer took over). A record that cannot be
    written (the storage is what failed) is logged: the error itself goes on to the
    caller."""
    if not isinstance(err, Exception) or isinstance(err, LeaseLost):
        return False
    text = " ".join(str(err).split()) or type(err).__name__
    try:
        storage.write_json(_path(block), {
            "time": time.time(), "step": step, "taken": taken, "type": type(err).__name__,
            "error": text[:MAX_CHARS], "process": this_process()})
    except Exception as why:  # noqa: BLE001 (the training error is the one to raise)
        log.warning("block %d: could not record its failure in the run directory: %s",
                    block, why)
    return True


def record_given_up(storage: Storage, block: int, step: int | None, err: Exception,
                    session: str = "") -> None:
    """The driver's record of a block it gave up (its process lost past train.max_restarts,
    stalled, unreachable), or of an error a replica other than rank 0 met: ``step`` is the
    one the replica was training (None: it met the error at its start), else the one after
    the block's last report in this run, and it was training at least the step after its
    newest checkpoint (a block that resumed and was lost before its first report). Nothing
    where the block's lease is now another session's than the driver's ``session``: a rerun
    took the block since, and keeps its own record."""
    lease = BlockLease(storage, block, session, 0.0).read() if session else None
    if lease and lease.get("session") != session:
        return
    if step is not None:
        states = BlockCheckpoints(storage, block).steps("state")
        step = max(step, states[-1] + 1 if states else 1)
    record_failure(storage, block, step, err)


def failed_when(step: int | None, taken: bool) -> str:
    """Where a failure came, beside a step count of those done: ``taking step 1`` (none of
    it done), ``after step 2`` (writing its outputs) or ``at its start``."""
    if step is None:
        return "at its start"
    return f"after step {step:,}" if taken else f"taking step {step:,}"


def last_failure(storage: Storage, block: int) -> dict[str, Any] | None:
    """The block's recorded failure (time, step or None, type, error, process), or None."""
    if not storage.exists(_path(block)):
        return None
    try:
        record = storage.read_json(_path(block))
    except FileNotFoundError:  # removed since: a process trains the block again
        return None
    if not (isinstance(record, dict) and isinstance(record.get("error"), str)
            and (record.get("step") is None or isinstance(record.get("step"), int))):
        raise ValueError(f"{storage.uri(_path(block))}: not a failure record")
    return record


def clear_failure(storage: Storage, block: int) -> None:
    """Remove the block's failure record: a process trains it again."""
    if storage.exists(_path(block)):
        storage.delete(_path(block))
