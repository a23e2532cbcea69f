"""What each Ray Train worker of a block with replicas runs (runtime.replicas_per_block > 1).

Ray Train has set up the block's own process group (gloo on CPUs, NCCL on GPUs). Every replica
builds the block from the same seed, resumes from the block's latest checkpoint, streams its
share of each global batch and trains it; rank 0 also holds the block's write lease, writes
its history and checkpoints, records its metrics and posts its progress on ``queue``. A replica
that dies takes its group down with it; Ray Train starts the group again (train.max_restarts)
and every replica resumes from the block's checkpoint, while the other blocks train on. Rank 0
takes the block's lease first, and counts the restart (the block's restarts.json) when it
takes over the lease that its own run's earlier incarnation left held, whether that one failed
in training or at its start. An incarnation that failed before it held the lease (the run
directory out of reach) wrote nothing there, and its restart is not counted: Ray Train does
not tell a worker which of its attempts it is (its own count, train.max_restarts, still
limits them).

No Ray here: block_group.py's ``train_replica`` hands in what Ray Train gives a worker (its
device and actor handle), so a unit test runs a worker on a process group of its own.

Bad input met by any replica (a UserError) fails the run: a restart would meet it again. Its
message names the rank that met it and the step it was training (None: at its start): rank 0
records its own as the block's failure (as a block actor does); another rank does not write the
block's directory, so the driver records it, at that step or at the block's start, once the
group is stopped. A rank 0 fenced off by a newer writer of the
block (LeaseLost: an older incarnation of the group, still running after its replacement took
the lease over) is no failure of the run: it stops without writing, and the newer writer trains
the block on.
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any

import torch

from dbparallel.config import Config
from dbparallel.errors import UserError
from dbparallel.runtime import faults
from dbparallel.runtime.metrics import BlockRecorder, Sink
from dbparallel.training.device import block_device
from dbparallel.training.lease import LeaseLost
from dbparallel.training.loop import BlockRun
from dbparallel.training.replicas import Replicas
from dbparallel.training.session_lease import take_lease
from dbparallel.training.storage import Storage


def run_replica(cfg: Config, block: int, session: str, run_id: str, queue: Any,
                replicas: Replicas, gpu: str, actor: Any, sink: Sink | None = None) -> None:
    """Train block ``block`` as ``replicas``' rank, on ``gpu`` (the device Ray Train gave this
    worker) where ``cfg`` asks for a GPU, else on the CPU, posting (kind, block, payload)
    messages on ``queue``; ``actor``: this worker's handle, which the driver kills to restart
    the group; ``sink``: where rank 0 records its metrics (Ray's by default), labelled with
    ``run_id``, the run directory's."""
    torch.set_num_threads(cfg.runtime.torch_threads)
    # opened before the lease, which is a file in it: an error opening it cannot be recorded
    # there (the driver's error names it)
    storage = Storage(cfg.run_dir)
    restarts, lease = 0, None
    try:
        if replicas.writer:  # before anything else of its start can fail (lease.py)
            lease, restarts = take_lease(storage, block, session, cfg.train.lease_timeout_s)
        # the device is chosen once the block is held: a GPU asked for and not here is rank
        # 0's to record as the block's failure at its start
        run = BlockRun(cfg, block, None, storage, partial(block_device, cfg, gpu),
                       session=session, replicas=replicas, lease=lease)
    except BaseException as err:  # e.g. a run directory trained with other values
        _report(queue, block, err, replicas.rank, None)
        raise
    try:
        restarts = int(replicas.sum(torch.tensor([restarts], device=run.trainer.device)).item())
        recorder = None
        if replicas.writer:
            recorder = BlockRecorder(cfg.run.name, run_id, block, run.trainer.sigma_range, sink)
            recorder.resumed(restarts, run.trainer.nonfinite_steps)
            queue.put(("start", block, {"restarts": restarts, "actor": actor}))
        else:
            queue.put(("worker", block, {"restarts": restarts, "actor": actor}))
        kill_at = faults.due(cfg, block, restarts) if replicas.rank == cfg.debug.kill_replica \
            else None
        every, steps = cfg.train.log_every, cfg.train.steps_of(block)

        def on_step(stats: Any) -> None:
            if recorder is not None:
                recorder.record(stats, run.trainer)
            if kill_at is not None and stats.step == kill_at:
                faults.die()  # fault injection (debug.*): this replica is lost

        while not run.done:
            t = run.trainer
            run.train_until(min((t.step // every + 1) * every, steps), on_step)
            if replicas.writer:
                queue.put(("progress", block, {
                    "block": block, "step": t.step, "done": run.done, "loss": t.final_loss,
                    "pid": os.getpid(), "restarts": restarts}))
        if replicas.writer:
            queue.put(("summary", block, {**run.summary(), "restarts": restarts}))
    except BaseException as err:
        _report(queue, block, err, replicas.rank, run.trainer.step + 1)  # the step it trained
        # the lease stays held: the group's next incarnation takes it over and counts a
        # restart; the driver releases it at the end of the run
        run.stream.close()
        raise
    run.close()


def _report(queue: Any, block: int, err: BaseException, rank: int, step: int | None) -> None:
    """Post ``err``, met by ``rank`` training ``step`` (None: at its start), as the run's
    failure, once, where it is bad input; not where it is a fenced-off writer's stop
    (LeaseLost, itself a UserError)."""
    if isinstance(err, UserError) and not isinstance(err, LeaseLost):
        queue.put(("error", block, {"error": err, "rank": rank, "step": step}))
