"""The controller's view of a Ray run: each block is one actor, or with
runtime.replicas_per_block > 1 one Ray Train worker group (block_group.py); calls go out,
finished ones come back as events."""

from __future__ import annotations

import logging
import time
from typing import Any

import ray
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from dbparallel.config import Config
from dbparallel.data.own_code import OwnCode, pack
from dbparallel.runtime.assembler_actor import AssemblerActor
from dbparallel.runtime.backend import BlockLost, BlockUnavailable, Event, RunFailed
from dbparallel.runtime.block_actor import BlockActor
from dbparallel.runtime.block_group import BlockGroup
from dbparallel.runtime.controller_gate import start_gate
from dbparallel.runtime.summary_rescue import (
    SUMMARY_TIMEOUT_S,
    first_line,
    rescue_summary,
    root_cause,
    summary_of,
)

log = logging.getLogger(__name__)
QUEUE_TIMEOUT_S = 60.0  # for the groups' progress queue to answer a read


def assembly_bundle(cfg: Config) -> dict[str, float]:
    """What the assembly actor reserves (nothing when it asks for no CPU and no GPU)."""
    r = cfg.runtime
    return {k: v for k, v in (("CPU", r.assembly_cpus), ("GPU", r.assembly_gpus)) if v}


class RayBackend:
    """The controller's view of the actors: submit calls, collect finished ones. A block is
    one actor, or with runtime.replicas_per_block > 1 a Ray Train worker group
    (block_group.py) that places its own workers; ``pg`` then holds only the assembly
    actor's bundle, if any, at ``assembly_index``."""

    def __init__(self, cfg: Config, pg: Any, slots: int, session: str, run_id: str,
                 assembly_index: int | None = None):
        self.cfg, self.pg, self.slots, self.session = cfg, pg, slots, session
        self.run_id = run_id  # the run directory's: every process's metrics carry it
        self.assembly_index = slots if assembly_index is None else assembly_index
        self.actors: dict[int, Any] = {}  # the blocks training now
        self.slots_of: dict[int, int] = {}  # their bundles in ``pg``
        self.groups: dict[int, BlockGroup] = {}  # the blocks with replicas training now
        self.finished: dict[int, dict[str, Any]] = {}  # summaries of the blocks done
        self.assembler: Any = None
        self.pending: dict[ray.ObjectRef, tuple[str, int | None]] = {}
        self.queue: Any = None  # where the groups' rank 0 workers post their progress
        self.gate: Any = None  # where the groups' controllers announce themselves

    def start_block(self, block: int, slot: int) -> None:
        r = self.cfg.runtime
        if r.replicas_per_block > 1:
            if self.queue is None:
                from ray.util.queue import Queue

                self.queue = Queue(actor_options={"num_cpus": 0})
                self.gate = start_gate()
            self.groups[block] = BlockGroup(self.cfg, block, self.session, self.run_id,
                                            self.queue, self.gate)
            return
        self.slots_of[block] = slot
        self.actors[block] = self._actor(block, slot, self.cfg.train.max_restarts)

    def _actor(self, block: int, slot: int | None, restarts: int) -> Any:
        """A BlockActor of ``block`` in bundle ``slot`` of ``pg``; None: outside it (where
        Ray has room for the block's CPUs and GPUs)."""
        r = self.cfg.runtime
        placed = {} if slot is None else {
            "scheduling_strategy": PlacementGroupSchedulingStrategy(self.pg, slot)}
        return ray.remote(BlockActor).options(
            num_cpus=r.cpus_per_block, num_gpus=r.gpus_per_block,
            max_restarts=restarts, max_task_retries=restarts, **placed,
        ).remote(self.cfg, block, self.session, self.run_id)

    def finish_block(self, block: int) -> None:
        if block in self.groups:
            self._finish_group(block)
            return
        actor, slot = self.actors.pop(block), self.slots_of.pop(block)
        try:
            self.finished[block] = summary_of(actor)
            return
        except ray.exceptions.GetTimeoutError as err:
            raise BlockLost(f"its process did not send its summary within "
                            f"{SUMMARY_TIMEOUT_S:g} s of its last step") from err
        except ray.exceptions.RayError as err:  # its process died since its last step
            lost = err
        finally:
            ray.kill(actor, no_restart=True)  # its slot goes to the next queued block
        self.finished[block] = rescue_summary(
            self.cfg, block, f"its process was lost after its last step, before it sent its "
                             f"summary ({first_line(lost)})",
            lambda: self._actor(block, slot, 0))

    def _finish_group(self, block: int) -> None:
        group = self.groups.pop(block)
        try:
            self.finished[block] = group.finish(self._drain)
            return
        except BlockLost as err:  # its fit failed for good, hung, or ended without a summary
            lost = err
        # a hung group's workers hold the block's resources: stopped first. The group placed
        # its own workers (``pg`` holds none of theirs): the new process is placed by Ray
        group.stop(self._drain)
        self.finished[block] = rescue_summary(self.cfg, block, first_line(lost),
                                              lambda: self._actor(block, None, 0))

    def submit_train(self, block: int, until: int) -> None:
        if block in self.groups:
            self.groups[block].request(until)
            return
        self.pending[self.actors[block].train.remote(until)] = ("train", block)

    def submit_assemble(self, write_samples: bool) -> None:
        if self.assembler is None:
            r = self.cfg.runtime
            placed = {}
            if assembly_bundle(self.cfg):  # reserved with the blocks' bundles
                placed["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                    self.pg, self.assembly_index)
            self.assembler = ray.remote(AssemblerActor).options(
                num_cpus=r.assembly_cpus, num_gpus=r.assembly_gpus, name=None,
                max_restarts=self.cfg.train.max_restarts,
                max_task_retries=self.cfg.train.max_restarts, **placed,
            ).remote(self.cfg, self.run_id, decoder_code(self.cfg))
        self.pending[self.assembler.assemble.remote(write_samples)] = ("assemble", None)

    def poll(self, timeout_s: float) -> list[Event]:
        if not self.groups:
            return self._poll_calls(timeout_s)
        deadline = time.monotonic() + timeout_s
        while True:  # the groups answer through the queue: look at it every 0.2 s
            self._drain()
            events = [e for g in self.groups.values() for e in g.events()]
            events += self._poll_calls(0 if events else min(0.2, timeout_s))
            if events or time.monotonic() >= deadline:
                return events
            if not self.pending:
                time.sleep(0.2)

    def _drain(self) -> None:
        """Hand the groups' messages to them; RunFailed where the queue is lost (its actor
        is not started again: the workers hold its handle) or does not answer."""
        if self.queue is None:
            return
        try:  # the queue's own reads wait for ever
            n = ray.get(self.queue.actor.qsize.remote(), timeout=QUEUE_TIMEOUT_S)
            messages = ray.get(self.queue.actor.get_nowait_batch.remote(n),
                               timeout=QUEUE_TIMEOUT_S)
        except ray.exceptions.RayError as err:
            raise RunFailed(f"the queue on which the blocks with replicas post their progress "
                            f"was lost or did not answer within {QUEUE_TIMEOUT_S:g} s "
                            f"({first_line(err)}); every block's checkpoints are kept: the "
                            f"same train command resumes the run") from err
        for kind, block, payload in messages:
            if block in self.groups:
                self.groups[block].take(kind, payload)

    def _poll_calls(self, timeout_s: float) -> list[Event]:
        if not self.pending:
            return []
        ready, _ = ray.wait(list(self.pending), num_returns=1, timeout=timeout_s)
        if ready:
            more, _ = ray.wait(list(self.pending), num_returns=len(self.pending), timeout=0)
            ready = list(dict.fromkeys(ready + more))
        events = []
        for ref in ready:
            kind, block = self.pending.pop(ref)
            try:
                events.append(Event(kind, block, result=ray.get(ref)))
            except ray.exceptions.ActorUnavailableError as err:  # e.g. its node was lost
                events.append(Event(kind, block, error=BlockUnavailable(str(err))))
            except ray.exceptions.ActorDiedError as err:  # and Ray will not start it again
                first = first_line(err)
                if kind == "assemble":  # the next assembly (the final one) starts a new
                    self.assembler = None  # actor: this one's calls would all fail so
                events.append(Event(kind, block, error=BlockLost(
                    f"its process was lost and Ray does not start it again "
                    f"(train.max_restarts={self.cfg.train.max_restarts}): {first}")))
            except ray.exceptions.RayError as err:
                events.append(Event(kind, block, error=root_cause(err)))
        return events

    def restart_block(self, block: int) -> bool:
        if block in self.groups:
            return self.groups[block].restart()  # Ray Train starts the group again
        ray.kill(self.actors[block], no_restart=False)  # Ray restarts it; the call is retried
        return True

    def summaries(self) -> list[dict[str, Any]]:
        running = dict(zip(self.actors, ray.get([a.summary.remote() for a in
                                                 self.actors.values()], timeout=300),
                           strict=True))
        for block, group in self.groups.items():  # only when the run stopped early
            running[block] = group.summary or {"block": block, **(group.latest or {})}
        return [row for _, row in sorted({**self.finished, **running}.items())]

    def close(self, keep_assembler: bool = False) -> None:
        """Stop every process of the run; ``keep_assembler``: all but the assembly actor,
        whose gauges hold the final scores (``close_assembler`` stops it later)."""
        for ref in self.pending:  # cancelled first: killed with its call pending, an actor's
            try:  # call would be retried (and said so) as if its process were lost
                ray.cancel(ref)
            except ray.exceptions.RayError as err:  # the kill below still stops the actor
                log.debug("could not cancel a pending call: %s", err)
        for group in self.groups.values():
            group.stop(self._drain)
        for actor in self.actors.values():
            ray.kill(actor, no_restart=True)
        if not keep_assembler:
            self.close_assembler()

    def close_assembler(self) -> None:
        if self.assembler is not None:
            ray.kill(self.assembler, no_restart=True)


def decoder_code(cfg: Config) -> OwnCode | None:
    """sample.decoder's module, imported here, as the assembly actor is sent it where it is
    the user's own code (another node may not have it); None without a decoder."""
    if not cfg.sample.decoder:
        return None
    from dbparallel.training.eval.decoder import load_decoder

    setting = f"sample.decoder={cfg.sample.decoder}"
    load_decoder(cfg.sample.decoder)
    return pack(cfg.sample.decoder, setting)
