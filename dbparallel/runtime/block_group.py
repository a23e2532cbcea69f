"""The driver's side of a block with replicas: one Ray Train TorchTrainer per block.

Its ``fit`` runs in a daemon thread of the driver, so blocks with replicas train at once, each
in its own worker group and process group; Ray Train restarts a group whose worker died
(FailureConfig, train.max_restarts) without touching any other block. Rank 0 posts progress
on a queue that the backend drains; ``events`` turns it into the controller's answers to
``submit_train``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import ray
from ray.train import FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer, get_device
from ray.train.v2._internal.execution.callback import ControllerCallback, WorkerGroupCallback

from dbparallel.config import Config
from dbparallel.runtime.backend import BlockLost, Event, RunFailed
from dbparallel.runtime.controller_gate import end_controller
from dbparallel.runtime.replica_worker import run_replica
from dbparallel.training.replicas import Replicas

log = logging.getLogger(__name__)
PREEMPTION_WATCHER = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
GATE_TIMEOUT_S = 60.0  # for the controllers' gate to answer a stop (it may be starting)


def trainer_for(cfg: Config, block: int, session: str, run_id: str, queue: Any,
                gate: Any) -> TorchTrainer:
    """Block ``block``'s TorchTrainer: runtime.replicas_per_block workers, each with
    runtime.cpus_per_block CPUs and runtime.gpus_per_block GPUs; its controller announces
    itself at ``gate`` (controller_gate.py; None: nowhere)."""
    r = cfg.runtime
    resources = {"CPU": r.cpus_per_block, **({"GPU": r.gpus_per_block}
                                              if r.gpus_per_block else {})}
    storage = cfg.run_dir if "://" in cfg.run_dir else os.path.abspath(cfg.run_dir)
    # Ray Train's preemption watcher: one more actor per group, whose start logs an error line
    # and which only reports drained nodes (their workers fail, and the group restarts from
    # the block's checkpoint either way). Off unless set; Ray passes it on to the controller.
    os.environ.setdefault(PREEMPTION_WATCHER, "0")
    return TorchTrainer(
        train_replica,
        train_loop_config={"cfg": cfg, "block": block, "session": session, "run_id": run_id,
                           "queue": queue},
        scaling_config=ScalingConfig(num_workers=r.replicas_per_block,
                                     use_gpu=bool(r.gpus_per_block),
                                     resources_per_worker=resources),
        run_config=RunConfig(name=f"block_{block}-{session[:8]}",
                             storage_path=f"{storage}/ray_train",
                             failure_config=FailureConfig(max_failures=cfg.train.max_restarts),
                             callbacks=[ControllerAnnounce(gate, block)]),
    )


class ControllerAnnounce(ControllerCallback, WorkerGroupCallback):
    """Announces the group's Ray Train controller at the run's gate as it starts, before it
    starts any worker, and the placement group of each worker group it starts: a stop kills
    the controller, as killing only its workers leaves it to start the group again
    (train.max_restarts times), in a program that joined Ray itself after its run returned,
    and removes the placement group, which the controller's death leaves reserved there. One
    whose group was stopped already is killed there, and waits for it."""

    def __init__(self, gate: Any, block: int):
        self.gate, self.block = gate, block

    def after_controller_start(self, train_run_context: Any) -> None:
        if self.gate is not None:
            me = ray.get_runtime_context().current_actor
            self._go_on(ray.get(self.gate.announce.remote(self.block, me)))

    def before_worker_group_start(self, worker_group_context: Any) -> None:
        if self.gate is not None:
            self._go_on(ray.get(self.gate.starting.remote(self.block)))

    def after_worker_group_start(self, worker_group: Any) -> None:
        if self.gate is not None:
            placed = worker_group.get_worker_group_state().placement_group_handle
            self._go_on(ray.get(self.gate.placed.remote(self.block, placed.placement_group)))

    @staticmethod
    def _go_on(allowed: bool) -> None:
        # the gate's kill ends this process; going on would start the workers
        while not allowed:
            time.sleep(1.0)


def train_replica(config: dict[str, Any]) -> None:
    """The train loop of one worker (replica_worker.py): ``config`` holds cfg, block, session,
    run_id and queue."""
    cfg: Config = config["cfg"]
    replicas = Replicas.from_process_group()
    assert replicas is not None, "a block with replicas runs in a process group"
    run_replica(cfg, int(config["block"]), config["session"], config["run_id"],
                config["queue"], replicas, str(get_device()),
                ray.get_runtime_context().current_actor)


class Roster:
    """The workers of a group's incarnations (numbered by the block's restarts), rank 0 first
    whatever order their messages arrive in; ``current`` is the latest incarnation whose rank 0
    has reported."""

    def __init__(self) -> None:
        self.incarnation = -1
        self._ranks: dict[int, list[Any]] = {}

    def started(self, incarnation: int, rank0: Any) -> None:
        self.incarnation = incarnation
        self._ranks.setdefault(incarnation, []).insert(0, rank0)

    def joined(self, incarnation: int, worker: Any) -> None:
        self._ranks.setdefault(incarnation, []).append(worker)

    @property
    def current(self) -> list[Any]:
        return self._ranks.get(self.incarnation, [])


class BlockGroup:
    """One block's worker group as the backend sees it."""

    def __init__(self, cfg: Config, block: int, session: str, run_id: str, queue: Any,
                 gate: Any = None):
        self.block, self.gate = block, gate  # gate: where its controller announces itself
        self.max_restarts = cfg.train.max_restarts
        self.latest: dict[str, Any] | None = None  # rank 0's last progress
        self.summary: dict[str, Any] | None = None
        self.roster = Roster()  # the workers of the group's current incarnation
        self.until: int | None = None  # the step the controller waits for
        self.error: BaseException | None = None  # bad input a worker met (a UserError)
        self.error_rank = 0  # the worker that met it
        self.error_step: int | None = None  # the step it was training (None: its start)
        self.fitted: Future[None] = Future()
        self.killed = -1  # the last incarnation restart() killed
        trainer = trainer_for(cfg, block, session, run_id, queue, gate)
        threading.Thread(target=self._fit, args=(trainer,), daemon=True,
                         name=f"block-{block}-fit").start()

    def _fit(self, trainer: TorchTrainer) -> None:
        try:
            result = trainer.fit()
            if result.error is not None:
                raise result.error
            self.fitted.set_result(None)
        except BaseException as err:  # noqa: BLE001 (handed to the controller as an Event)
            self.fitted.set_exception(err)

    def take(self, kind: str, payload: dict[str, Any]) -> None:
        """A message from one of this block's workers."""
        if kind == "start":  # rank 0 of a new incarnation
            self.roster.started(payload["restarts"], payload["actor"])
            self.latest = {**(self.latest or {}), "restarts": payload["restarts"]}
        elif kind == "worker":  # another rank: its message may come before rank 0's
            self.roster.joined(payload["restarts"], payload["actor"])
        elif kind in ("progress", "summary") and payload["restarts"] < self.roster.incarnation:
            return  # posted by rank 0 of an earlier incarnation, which is fenced off now
        elif kind == "progress":
            self.latest = payload
        elif kind == "summary":
            self.summary = payload
        elif kind == "error" and (self.error is None
                                  or payload["rank"] == 0 and self.error_rank != 0):
            # the first, or rank 0's that came with another rank's: rank 0 recorded its own
            self.error, self.error_rank = payload["error"], payload["rank"]
            self.error_step = payload["step"]

    @property
    def workers(self) -> list[Any]:
        """Actor handles of the current incarnation's workers, rank 0 first."""
        return self.roster.current

    def request(self, until: int) -> None:
        self.until = until

    def events(self) -> list[Event]:
        """The answer to the pending request, once rank 0 reached its step or the group
        failed for good."""
        if self.until is None:
            return []
        latest = self.latest or {}
        if self.error is not None:  # the driver records one that rank 0 did not meet
            self.until = None
            return [Event("train", self.block, error=self.error,
                          recorded=self.error_rank == 0, step=self.error_step,
                          at_start=self.error_step is None)]
        if "step" in latest and (latest["step"] >= self.until or latest["done"]):
            self.until = None
            return [Event("train", self.block, result=dict(latest))]
        if self.fitted.done() and self.fitted.exception() is not None:
            self.until = None
            err = self.fitted.exception()
            return [Event("train", self.block, error=given_up(err, self.max_restarts),
                          recorded=writer_failed(err))]
        return []

    def finish(self, drain: Callable[[], None], timeout_s: float = 300.0) -> dict[str, Any]:
        """Wait for the group to end, then ``drain`` the queue (its summary was posted before
        its fit ended); the block's row of the report. BlockLost where the group does not
        end within ``timeout_s``, fails for good or ends without a summary."""
        try:
            self.fitted.result(timeout=timeout_s)
        except TimeoutError as err:
            raise BlockLost(f"its worker group did not end within {timeout_s:g} s of its last "
                            f"step") from err
        except Exception as err:  # noqa: BLE001 (any failure of the fit loses the summary)
            lost = given_up(err, self.max_restarts)
            raise (lost if isinstance(lost, BlockLost) else BlockLost(
                f"its worker group failed after its last step: {lost}")) from err
        drain()
        if self.summary is None:
            raise BlockLost("its worker group ended without sending its summary")
        return self.summary

    def restart(self) -> bool:
        """Kill the current incarnation's rank 0: Ray Train starts the group again. False
        where there is none to kill: no rank 0 reported since the last one killed (the group
        starts again), or ever."""
        if not self.workers or self.roster.incarnation == self.killed:
            return False
        ray.kill(self.workers[0], no_restart=True)
        self.killed = self.roster.incarnation
        return True

    def stop(self, drain: Callable[[], None]) -> None:
        """Kill the group's controller (its workers die with it), remove its workers'
        placement group and kill the workers that posted (``drain`` the queue). A controller
        that has not announced itself at the gate yet, still starting, or that places a worker
        group now, is killed there as it reports."""
        if self.gate is not None:
            try:
                ended = ray.get(self.gate.stop.remote(self.block), timeout=GATE_TIMEOUT_S)
            except ray.exceptions.RayError as err:  # kill the workers known
                log.warning("block %d: could not stop its worker group's controller: %s",
                            self.block, err)
            else:
                if ended is not None:
                    end_controller(*ended)
        try:
            drain()
        except RunFailed as err:  # the queue is lost: kill the workers known
            log.debug("could not read the group's workers: %s", err)
        for worker in self.workers:
            ray.kill(worker, no_restart=True)


def given_up(err: BaseException | None, max_restarts: int) -> BaseException:
    """Why a group's fit failed for good, as the controller takes it: BlockLost where a
    worker's process died (Ray Train started the group train.max_restarts times and gave it
    up, as Ray does an actor of a block without replicas), else the workers' own error."""
    failures = getattr(err, "worker_failures", None) or {}
    for _, failure in sorted(failures.items()):
        # a dead worker fails its health check; the check's failure is the actor's death (once
        # one died, Ray Train may report its peers so too: which one went first is not known)
        died = getattr(failure, "health_check_failure", failure)
        if isinstance(died, ray.exceptions.RayActorError):
            said = str(died).strip()
            first = said.splitlines()[0] if said else type(died).__name__
            return BlockLost(f"its worker group was lost and Ray Train does not start it again "
                             f"(train.max_restarts={max_restarts}): a replica's process died: "
                             f"{first}")
    return _cause(err)


def writer_failed(err: BaseException | None) -> bool:
    """Whether rank 0 met an error of its own where a group's fit failed for good (it records
    it, or a lost process, which the driver records as BlockLost): not where only other ranks
    failed (rank 0, waiting for them in a collective, was stopped with its group)."""
    failures = getattr(err, "worker_failures", None)
    return not failures or 0 in failures


def _cause(err: BaseException | None) -> BaseException:
    cause = getattr(err, "cause", None) or getattr(err, "__cause__", None)
    return cause if isinstance(cause, BaseException) else err  # type: ignore[return-value]
