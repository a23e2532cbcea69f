"""The controller: a small steppable state machine over B block actors and one assembler.

It knows actors only through a ``Backend`` (Ray in ray_backend.py, fakes in tests): it starts
blocks in the slots it has (``slots`` < B: the others queue, lowest block first, and start as
blocks finish: waves), asks each started block for its next chunk of steps, moves the
progress bars, notices stalls, fails the run when a block is lost for good, and triggers
assembly when every block is done.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dbparallel.config import Config
from dbparallel.errors import SPACE_FIX, DataUnreachable, UserError, out_of_space
from dbparallel.runtime.backend import (
    Backend,
    BlockLost,
    BlockStalled,
    BlockUnavailable,
    Event,
    RunFailed,
)
from dbparallel.runtime.block_status import MAX_UNAVAILABLE, BlockStatus, unavailable_message
from dbparallel.shell import shell_path
from dbparallel.training.out_of_memory import START_MEMORY_FIX, OutOfMemory, out_of_memory

log = logging.getLogger(__name__)


class State(enum.Enum):
    TRAINING = "training"
    ASSEMBLING = "assembling"
    DONE = "done"
    FAILED = "failed"


@dataclass
class Controller:
    cfg: Config
    backend: Backend
    # (block, step, loss, restarts of the run directory's lifetime, as report.json counts)
    on_progress: Callable[[int, int, float, int], None] = lambda block, step, loss, n: None
    on_start: Callable[[int], None] = lambda block: None  # a block got its slot
    on_stall: Callable[[int, bool], None] = lambda block, stalled: None
    on_assembly_failed: Callable[[str], None] = lambda message: None
    # (block, the step it was training or None at its start, why): the controller gave a
    # block up (its process lost past train.max_restarts, or stalled), or its error was met by
    # a replica that records none (Event.recorded); an error of a block's own start or
    # training its writer records itself
    on_block_failed: Callable[[int, int | None, Exception], None] = lambda block, step, err: None
    # (step, metrics) of each finished assembly, during training and the final one; step is
    # the lowest step among the snapshots it composed
    on_assembled: Callable[[int, dict[str, float]], None] = lambda step, metrics: None
    # every block is done and the final assembly is about to be asked for
    on_final_assembly: Callable[[], None] = lambda: None
    clock: Callable[[], float] = time.monotonic
    slots: int = 0  # blocks training at once; 0 = every block
    # each block's restarts in earlier runs, read before its actor starts (a restart before
    # its first report is then said too); None: taken from each block's first report
    restarts_before: list[int] | None = None
    state: State = State.TRAINING
    blocks: list[BlockStatus] = field(default_factory=list)
    assembly: dict[str, float] = field(default_factory=dict)
    error: str = ""
    user_error: UserError | None = None  # a block met bad input (e.g. a bad row): exit 2
    _assembling: bool = False
    _assembly_started_s: float = 0.0
    _next_assembly: int = 0

    def __post_init__(self) -> None:
        now = self._started_s = self.clock()
        before = self.restarts_before or [None] * self.cfg.model.blocks
        self.blocks = [BlockStatus(last_progress_s=now, restarts_before=n, restarts=n or 0)
                       for n in before]
        self.slots = min(self.slots or len(self.blocks), len(self.blocks))
        self._next_assembly = self.cfg.train.assemble_every or self.cfg.train.max_steps + 1

    def chunk_end(self, block: int, status: BlockStatus) -> int:
        every = self.cfg.train.log_every
        return min((status.step // every + 1) * every, self.cfg.train.steps_of(block))

    def step(self, timeout_s: float = 1.0) -> State:
        """Submit what is due, handle what finished within ``timeout_s``; returns the state."""
        if self.state == State.TRAINING:
            self._start_queued()
            for b, status in enumerate(self.blocks):
                if status.slot >= 0 and not status.done and not status.in_flight:
                    self.backend.submit_train(b, self.chunk_end(b, status))
                    status.in_flight = True
        if self.state in (State.TRAINING, State.ASSEMBLING):
            for event in self.backend.poll(timeout_s):
                self._handle(event)
        if self.state == State.TRAINING:
            self._check_stalls()
            if all(s.done for s in self.blocks) and not self._assembling:
                self.state = State.ASSEMBLING
                self.on_final_assembly()
                self._submit_assemble(True)
            elif (lowest := min(s.step for s in self.blocks)) >= self._next_assembly \
                    and not self._assembling:
                # the next multiple past the blocks' steps: a resumed run (or a chunk of
                # train.log_every past several of them) assembles once, not once for each
                # multiple it passed, back to back on the same snapshots
                every = self.cfg.train.assemble_every
                self._next_assembly = (lowest // every + 1) * every
                self._submit_assemble(False)
        if self.state in (State.TRAINING, State.ASSEMBLING) and self._assembling:
            waited = self.clock() - self._assembly_started_s
            if waited > self.cfg.train.assembly_timeout_s:  # a final one may wait behind it
                self._fail(f"an assembly did not finish within "
                           f"train.assembly_timeout_s={self.cfg.train.assembly_timeout_s:g}; "
                           f"{self._retry_hint(self.state == State.ASSEMBLING)}")
        return self.state

    def _start_queued(self) -> None:
        """Start queued blocks, lowest first, in the free slots."""
        busy = {s.slot for s in self.blocks if s.slot >= 0 and not s.done}
        free = [k for k in range(self.slots) if k not in busy]
        for b, status in enumerate(self.blocks):
            if not free:
                return
            if status.slot < 0:
                status.slot = free.pop(0)
                status.started_s = self.clock() - self._started_s
                status.last_progress_s = self.clock()
                self.backend.start_block(b, status.slot)
                self.on_start(b)

    def schedule(self) -> list[dict[str, Any]]:
        """Where and when each block trained: slot, started_s, finished_s (run seconds)."""
        return [{"block": b, "slot": s.slot, "started_s": round(s.started_s, 3),
                 "finished_s": round(s.finished_s, 3)} for b, s in enumerate(self.blocks)]

    def _submit_assemble(self, final: bool) -> None:
        self.backend.submit_assemble(final)
        self._assembling = True
        self._assembly_started_s = self.clock()

    def _retry_hint(self, final: bool = True) -> str:
        if not final:  # an assembly during training: blocks still have steps to go
            return ("every block's checkpoints are kept: the same train command resumes the "
                    "blocks from them, and assembles them once every block is done")
        return (f"every block's checkpoints are kept: the same train command assembles them "
                f"again and writes report.json (`dbparallel eval "
                f"{shell_path(self.cfg.run_dir)}` evaluates them without writing it)")

    def _handle(self, event: Event) -> None:
        if event.kind == "assemble":
            self._assembling = False
            if event.error is not None and self.state == State.TRAINING:
                message = f"an assembly during training failed (training goes on): {event.error}"
                log.warning(message)
                self.on_assembly_failed(message)
            elif event.error is not None:
                self._fail(f"the final assembly failed: {event.error}; {self._retry_hint()}")
            else:
                metrics = dict(event.result)
                step = int(metrics.get("block_steps_min", min(s.step for s in self.blocks)))
                self.on_assembled(step, metrics)
                if self.state == State.ASSEMBLING:
                    self.assembly = metrics
                    self.state = State.DONE
                else:
                    log.info("assembly during training: %s", metrics)
            return
        assert event.block is not None
        status = self.blocks[event.block]
        status.in_flight = False
        transient = (BlockUnavailable, DataUnreachable)  # the block is fine: ask it again
        if isinstance(event.error, transient) and status.unavailable < MAX_UNAVAILABLE:
            status.unavailable += 1
            log.warning(unavailable_message(event.block, event.error, status.unavailable))
            log.debug("block %d: %r", event.block, event.error)
            return  # not in flight any more: the next step submits the call again
        if isinstance(event.error, (*transient, BlockLost)) or \
                (event.error is not None and not event.recorded):  # the driver records it
            step = event.step if event.step is not None or event.at_start else status.step + 1
            self.on_block_failed(event.block, step, event.error)
        if isinstance(event.error, UserError):  # restarting would meet it again
            self.user_error = event.error
            said = str(event.error)  # most name their block already
            self._fail(said if said.startswith(f"block {event.block}") else
                       f"block {event.block}: {said}", said=False)  # raised, printed once
            return
        if event.error is not None:  # an error of its training is not retried: it would
            # meet it again; a lost process was restarted as often as allowed (BlockLost)
            said, named = str(event.error), f"block {event.block}:"  # most name their block
            said = said[len(named):].strip() if said.startswith(named) else said
            if out_of_space(event.error):
                said += (f": {SPACE_FIX}; the checkpoints written stay, and the same train "
                         f"command resumes the run")
            elif out_of_memory(event.error) and not isinstance(event.error, OutOfMemory):
                said += f": {START_MEMORY_FIX}"  # met at its start: its steps say their own
            self._fail(f"block {event.block} failed: {said}")
            return
        progress = event.result
        status.unavailable = 0
        if progress["step"] > status.step:
            status.last_progress_s = self.clock()
        if status.restarts_before is None:  # a rerun's blocks report earlier runs' too
            status.restarts_before = progress["restarts"]
        elif progress["restarts"] > status.restarts:
            since = progress.get("resumed_from")  # the checkpoint its new process loaded
            went = ("went on from its latest checkpoint" if since is None else
                    "started over (no checkpoint yet)" if since == 0 else
                    f"went on from its checkpoint of step {since}")
            log.warning("block %d: its process was restarted (%d of train.max_restarts=%d in "
                        "this run) and %s; now at step %d",
                        event.block, progress["restarts"] - status.restarts_before,
                        self.cfg.train.max_restarts, went, progress["step"])
        status.step, status.done = progress["step"], progress["done"]
        status.loss, status.restarts = progress["loss"], progress["restarts"]
        if status.done:
            status.finished_s = self.clock() - self._started_s
            try:
                self.backend.finish_block(event.block)
            except BlockLost as err:  # given up as a block lost while it trains
                self.on_block_failed(event.block, status.step + 1, err)
                self._fail(f"block {event.block} failed: {err}")
                return
        if status.stalled:
            status.stalled = False
            self.on_stall(event.block, False)
        self.on_progress(event.block, status.step, status.loss, status.restarts)

    def _check_stalls(self) -> None:
        """A block without progress for train.stall_timeout_s is reported and restarted (its
        process is killed; Ray starts it again and it resumes), up to train.max_restarts."""
        now, limit = self.clock(), self.cfg.train.stall_timeout_s
        for b, status in enumerate(self.blocks):
            quiet = now - status.last_progress_s
            if status.slot < 0 or status.done or quiet <= limit:
                continue
            if not status.stalled:
                status.stalled = True
                self.on_stall(b, True)
            if status.stall_restarts >= self.cfg.train.max_restarts:
                restarts = f"{status.stall_restarts - status.stall_idle} restarts"
                if status.stall_idle:
                    restarts += (f" and {status.stall_idle} more stall timeouts in which its "
                                 f"restarted processes had not started (none to restart)")
                stalled = BlockStalled(
                    f"block {b} made no progress for {quiet:.0f} s (train.stall_timeout_s="
                    f"{limit:g}) after {restarts} (train.max_restarts)")
                self.on_block_failed(b, status.step + 1, stalled)
                self._fail(str(stalled))
                return
            status.stall_restarts += 1
            status.last_progress_s = now
            restarted = self.backend.restart_block(b)
            status.stall_idle += not restarted
            log.warning("block %d has made no progress for %.0f s (train.stall_timeout_s); %s "
                        "(%d of train.max_restarts=%d)", b, quiet,
                        "restarting it" if restarted else
                        "its restarted processes have not started: none to restart",
                        status.stall_restarts, self.cfg.train.max_restarts)

    def _fail(self, message: str, said: bool = True) -> None:
        self.state = State.FAILED
        self.error = message
        if said:  # at once: stopping the other blocks may take a while
            log.error(message)

    def run(self, timeout_s: float = 1.0) -> dict[str, float]:
        """Step until done; returns the assembly metrics or raises RunFailed."""
        while self.step(timeout_s) not in (State.DONE, State.FAILED):
            pass
        if self.state == State.FAILED:
            if self.user_error is not None:
                raise self.user_error
            raise RunFailed(self.error)
        return self.assembly
