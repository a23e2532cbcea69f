"""What the controller (controller.py) knows of each block, and how it words a block out of
reach."""

from __future__ import annotations

import math
from dataclasses import dataclass

from dbparallel.runtime.backend import BlockUnavailable

MAX_UNAVAILABLE = 20  # calls in a row that may find a block unreachable before the run fails


def unavailable_message(block: int, error: Exception, asked: int) -> str:
    """The warning of the ``asked``-th call in a row (of MAX_UNAVAILABLE) that found
    ``block`` out of reach, and so is asked again: what happened, in words. The error comes
    first line only, and Ray's only on the first (it runs to some 300 characters and says
    the same each time); a data error (our own, short) each time, as it may change."""
    if isinstance(error, BlockUnavailable):
        said = f"block {block}: its process does not answer (its node may be lost)"
    else:
        said = f"block {block}: its data is out of reach"
    said += f": asking again, {asked} of {MAX_UNAVAILABLE}"
    text = str(error).strip()
    first = text.splitlines()[0] if text else type(error).__name__
    if isinstance(error, BlockUnavailable):
        return said + (f" (Ray: {first})" if asked == 1 else "")
    return f"{said} ({first})"


@dataclass
class BlockStatus:
    step: int = 0
    done: bool = False
    in_flight: bool = False
    loss: float = math.nan
    restarts: int = 0  # of the run directory's lifetime, as the block reports them
    restarts_before: int | None = None  # those of earlier runs (else its first report's)
    last_progress_s: float = 0.0
    stalled: bool = False
    stall_restarts: int = 0  # stall timeouts met (of train.max_restarts)
    stall_idle: int = 0  # of those, with no process to restart (a group's had not started)
    unavailable: int = 0  # calls in a row that found the block unreachable
    slot: int = -1  # where it trains; -1 = queued (not started)
    started_s: float = math.nan  # seconds after the controller started
    finished_s: float = math.nan
