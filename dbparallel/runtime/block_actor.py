"""The block actor: a thin shell around one BlockRun on its own device.

It takes only the config, its block index, the driver's session and the run directory's id
(small, inlined in the actor's creation, never objects in the object store that a lost node
could take with it), reads the run's pinned data index from the run directory, streams the
data files itself, resumes from its own latest checkpoint, trains in chunks the controller
asks for, and sends nothing to any other block.
``ray.remote`` is applied where it is started (ray_backend.py).

Its start takes the block's write lease before anything else in the run directory, and counts
a restart there where Ray started the actor again (wherever its last process was lost): an
error of the rest of its start (choosing its device, reading the pinned data, resuming) is
then recorded as the block's failure at its start, by the holder of its lease, and the lease
stays held, as after a failure in training (training/failure.py). Only opening the run
directory's storage comes first: the lease is a file there.
"""

from __future__ import annotations

import os
import warnings
from functools import partial
from typing import Any

import ray
import torch

from dbparallel.config import Config
from dbparallel.errors import DataUnreachable
from dbparallel.runtime import faults
from dbparallel.runtime.metrics import BlockRecorder
from dbparallel.training.block_trainer import StepStats
from dbparallel.training.device import block_device
from dbparallel.training.loop import BlockRun
from dbparallel.training.session_lease import take_lease
from dbparallel.training.storage import Storage


class BlockActor:
    """Trains block ``block`` of ``cfg`` on the data pinned in the run directory; ``session``
    (the driver's) lets a restarted incarnation take the block's write lease over; ``run_id``
    (the run directory's, training/run_id.py) labels its metrics, as every incarnation's."""

    def __init__(self, cfg: Config, block: int, session: str, run_id: str):
        self.cfg, self.block, self.run_id = cfg, block, run_id
        # An error of the start (a block another process trains, a damaged run directory) is
        # raised by the first call: Ray keeps a call's exception as its cause, where a failed
        # creation reaches the driver only as text, and bad input must stay bad input (exit 2)
        self.failed: Exception | None = None
        self.session = session
        self.counted = False  # this process's restart, if it is one, is in restarts.json
        self._try_start()

    def __repr__(self) -> str:
        # Ray's name of the actor (`ray list actors --detail`, log prefixes); a named actor's
        # name must be unique, and is freed only some time after the actor ends
        return f"BlockActor(run={self.cfg.run.name}, block={self.block})"

    def _try_start(self) -> None:
        try:
            self._start(self.session)
            self.failed = None
        except Exception as err:  # noqa: BLE001 (raised again by train)
            self.failed = err

    def _start(self, session: str) -> None:
        cfg, block = self.cfg, self.block
        torch.set_num_threads(cfg.runtime.torch_threads)
        # The one step before the lease: the lease is a file of the run directory, so its
        # storage is opened first, and an error opening it (an object store this node cannot
        # reach) cannot be recorded there; the driver's error names it.
        storage = Storage(cfg.run_dir)
        # counted once: a start tried again after a passing error is the same process
        restarted = not self.counted and self._reconstructed()
        lease, self.restarts = take_lease(storage, block, session, cfg.train.lease_timeout_s,
                                          restarted)
        self.counted = True
        # the device is chosen once the block is held: a GPU asked for and not here is then
        # recorded as the block's failure at its start
        self.run = BlockRun(cfg, block, None, storage, partial(block_device, cfg),
                            session=session, lease=lease)
        self.recorder = BlockRecorder(cfg.run.name, self.run_id, block,
                                      self.run.trainer.sigma_range)
        self.recorder.resumed(self.restarts, self.run.trainer.nonfinite_steps)

    @staticmethod
    def _reconstructed() -> bool:
        """Whether Ray started this actor again (its process was lost, or killed to restart)."""
        with warnings.catch_warnings():  # Ray's own property warns about its internals
            warnings.simplefilter("ignore")
            return bool(ray.get_runtime_context().was_current_actor_reconstructed)

    def train(self, until: int) -> dict[str, Any]:
        """Train up to step ``until``; returns this block's progress."""
        if isinstance(self.failed, DataUnreachable):  # passing: the driver asks again
            self._try_start()
        if self.failed is not None:
            raise self.failed
        kill_at = faults.due(self.cfg, self.block, self.restarts)  # fault injection (debug.*)
        if kill_at is not None and self.run.trainer.step < kill_at <= until:
            self.run.train_until(kill_at, self._on_step)
            faults.die()
        self.run.train_until(until, self._on_step)
        return self.progress()

    def _on_step(self, stats: StepStats) -> None:
        self.recorder.record(stats, self.run.trainer)

    def progress(self) -> dict[str, Any]:
        t = self.run.trainer
        return {"block": self.block, "step": t.step, "done": self.run.done,
                # the mean of its last train.log_every steps, as report.json and status give
                "loss": t.final_loss, "pid": os.getpid(),
                "restarts": self.restarts, "resumed_from": self.run.resumed_from}

    def summary(self) -> dict[str, Any]:
        if self.failed is not None:  # a process started only for the summary (ray_backend.py)
            raise self.failed
        return {**self.run.summary(), "restarts": self.restarts}
