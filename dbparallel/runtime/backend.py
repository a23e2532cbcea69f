"""What the controller and its backend say to each other: the calls a backend answers (Ray in
ray_backend.py, fakes in tests), the events it reports back, and the errors they carry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Event:
    """A finished call: ``kind`` is "train" (with ``block``) or "assemble"."""

    kind: str
    block: int | None
    result: Any = None
    error: BaseException | None = None
    # False: a process that does not write the block's directory (a replica other than rank
    # 0) met ``error``, and none recorded it; ``step``: the step it was training, where known;
    # ``at_start``: it met it at its start, before any step
    recorded: bool = True
    step: int | None = None
    at_start: bool = False


class Backend(Protocol):
    def start_block(self, block: int, slot: int) -> None:
        """Start block's process in ``slot`` (one of the reserved places)."""
        ...
    def finish_block(self, block: int) -> None:
        """The block is done: keep its summary, free its slot. BlockLost where its summary is
        lost (its process died since its last step)."""
        ...
    def submit_train(self, block: int, until: int) -> None: ...
    def submit_assemble(self, write_samples: bool) -> None: ...
    def poll(self, timeout_s: float) -> list[Event]: ...
    def summaries(self) -> list[dict[str, Any]]: ...
    def restart_block(self, block: int) -> bool:
        """Kill the block's process so that it restarts and resumes (its call is retried);
        whether there was one to kill (False: a group whose new processes have not started)."""
        ...


class RunFailed(RuntimeError):
    """The run cannot finish; the message names the block and its last error."""


class BlockUnavailable(RuntimeError):
    """A block's call failed because its process is (for now) unreachable, e.g. its node was
    lost while Ray restarts the actor elsewhere: the controller asks again."""


class BlockLost(RuntimeError):
    """A block's process died once more than train.max_restarts allows (Ray gave it up)."""


class BlockStalled(RuntimeError):
    """A block made no progress for train.stall_timeout_s after train.max_restarts restarts."""
