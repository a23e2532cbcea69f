"""The training loop of one block, shared by local mode and the Ray block actor."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import replace

from dbparallel.config import Config
from dbparallel.data.shards import DataIndex
from dbparallel.errors import RunDirError
from dbparallel.tasks.base import Batch, rows_of
from dbparallel.training.block_summary import block_summary
from dbparallel.training.block_trainer import BlockTrainer, StepStats
from dbparallel.training.checkpoint import BlockCheckpoints
from dbparallel.training.data_order import DataOrder
from dbparallel.training.data_pin import run_data
from dbparallel.training.eval.diagnostics import held_out_batch
from dbparallel.training.failure import clear_failure, record_failure
from dbparallel.training.history import BlockHistory, finite_or_none
from dbparallel.training.lease import BlockLease, LeaseLost
from dbparallel.training.out_of_memory import block_out_of_memory, out_of_memory
from dbparallel.training.replicas import Replicas
from dbparallel.training.resume import resume
from dbparallel.training.storage import Storage
from dbparallel.training.stream import BlockStream

log = logging.getLogger(__name__)
OnStep = Callable[[StepStats], None]


class BlockRun:
    """A trainer bound to its stream of the shared data and its checkpoints; resumes from its
    latest state. ``index``: the data it streams; None: those pinned in the run directory
    (run_data), read once the writer holds the block, so that an error reading them is
    recorded as the block's failure at its start, as one of resuming is. ``device``: where it
    trains, or what chooses that (``block_device``, which refuses a GPU asked for and not
    here), called once the writer holds the block, for the same reason."""

    def __init__(self, cfg: Config, block: int, index: DataIndex | None, storage: Storage,
                 device: str | Callable[[], str] = "cpu", prefetch: bool = True,
                 session: str = "", replicas: Replicas | None = None,
                 lease: BlockLease | None = None):
        self.cfg = cfg
        # one writer per block (with replicas: rank 0; the others only train); a run's
        # session (the driver's) may take its own lease over. ``lease``: the writer's, taken
        # already by the caller (session_lease.take_lease), which keeps it held if this start
        # fails, as if training failed (a restart takes it over and counts itself)
        self.writer = replicas is None or replicas.writer
        self.lease = lease or BlockLease(storage, block, session or uuid.uuid4().hex,
                                         cfg.train.lease_timeout_s)
        self._recorded = False  # this process recorded a failure of the block
        self._at = 0  # the step train_until is at: training it, or its held-out loss and saves
        if self.writer and lease is None:
            self.lease.acquire()
        try:
            if self.writer:
                clear_failure(storage, block)  # it trains again
            self._renewed = time.monotonic()
            index = run_data(cfg, storage) if index is None else index
            device = device() if callable(device) else device
            self.trainer = BlockTrainer(cfg, block, device, replicas=replicas)
            task = self.trainer.task
            self.order = DataOrder([s.rows for s in index.shards("train")],
                                   cfg.train.batch_size, cfg.run.seed, block,
                                   cfg.data.window_shards)
            self.stream = BlockStream(index, "train", self.order, task, self.trainer.device,
                                      prefetch, self.trainer.share, cfg.data.read_threads)
            self.index, self._heldout = index, None  # held-out rows, read at first use
            # the training thread's wait for batches and its steps' time in all, over this
            # process's steady steps (those of achieved_tflops: not the first, which counts
            # FLOPs and memory, after the first window's read, nor the compiling one)
            self.data_wait_s, self.busy_s = 0.0, 0.0
            self.checkpoints = BlockCheckpoints(storage, block, cfg.train.keep_checkpoints,
                                                cfg.train.keep_snapshots,
                                                self.lease.generation)
            self.resumed_from = resume(self.trainer, self.checkpoints, self.cfg,
                                       self.lease if self.writer else None, self.order)
            # only the writer keeps the history (creating it rewrites metrics.jsonl)
            self.history = BlockHistory(storage, block, self.resumed_from) if self.writer \
                else None
        except BaseException as err:
            self._record(None, err)  # for `dbparallel status`
            if lease is None:
                self.close_lease()
            raise

    def batch(self, step: int) -> Batch:
        return self.stream.batch(step)

    def _step(self) -> StepStats:
        """One training step on the next batch, with how long the training thread waited for
        that batch."""
        start, steady = time.perf_counter(), self.trainer.timed_steps
        batch = self.batch(self.trainer.step)
        waited = time.perf_counter() - start
        stats = replace(self.trainer.train_step(batch), data_wait_s=waited)
        if self.trainer.timed_steps > steady:
            self.data_wait_s += stats.data_wait_s
            self.busy_s += stats.data_wait_s + stats.step_time_s
        return stats

    @property
    def data_wait_share(self) -> float | None:
        """The share of its steps' time this process waited for batches (None: no steps)."""
        return self.data_wait_s / self.busy_s if self.busy_s else None

    def close(self) -> None:
        """Stop reading ahead, keep what this process measured (``_measured``) in the block's
        directory if it trained and stopped short (a finished block kept it at its last
        step), and release the block's lease (the run can be resumed from its checkpoints)."""
        try:
            self.stream.close()
            if not self.done:
                self._keep_measured()
        except (OSError, RunDirError) as why:  # a stop: the error that stopped the block is
            # the one to raise (a store out of reach, a damaged file)
            log.warning("block %d: could not keep what it measured in the run directory: %s",
                        self.trainer.block, why)
        finally:
            self.close_lease()

    def _keep_measured(self) -> None:
        if not (self.writer and self.trained):
            return
        try:
            self.lease.check()  # a fenced-off writer leaves it to its replacement
        except LeaseLost:
            return
        self.checkpoints.storage.write_json(self._measured_path, self._measured())

    @property
    def trained(self) -> bool:
        """Whether this process trained any of the block's steps."""
        return self.trainer.step > self.resumed_from

    @property
    def _measured_path(self) -> str:
        return f"{self.checkpoints.dir}/measured.json"

    def _measured(self) -> dict:
        """What this process measures while it trains the block; a later process that trains
        none of its steps (a rerun of a finished run) reports the last ones kept."""
        t = self.trainer
        return {"data_memory_bytes": self.stream.peak_bytes,
                "model_flops_per_step": t.model_flops_per_step,
                "achieved_tflops": t.achieved_tflops, "mfu": t.mfu,
                "data_wait_share": self.data_wait_share,
                "heldout_loss": finite_or_none(t.heldout_loss),
                "heldout_split": (self.index.heldout_split if self.cfg.train.heldout_every
                                  else None)}

    def close_lease(self) -> None:
        """Release the lease; a storage error doing so is a warning (the lease lapses, or a
        rerun on this machine takes it over once this process has ended)."""
        if not self.writer:
            return
        try:
            self.lease.release()
        except (OSError, RunDirError) as why:  # out of reach, or a damaged lease.json
            log.warning("block %d: could not release its write lease (%s); it lapses after "
                        "train.lease_timeout_s=%g s", self.lease.block, why,
                        self.lease.timeout_s)

    def _record(self, step: int | None, err: BaseException) -> bool:
        """Record ``err``, met at ``step``, as the block's failure where this process still
        holds its lease (not once its driver ended the run or another writer took over);
        whether it did. A lease that cannot be read is a warning: ``err`` goes on."""
        if not self.writer:
            return False
        try:
            held = self.lease.still_held()
        except Exception as why:  # noqa: BLE001 (the training error is the one to raise)
            if isinstance(err, Exception) and not isinstance(err, LeaseLost):
                log.warning("block %d: could not record its failure in the run directory: "
                            "%s", self.lease.block, why)
            return False
        taken = step is not None and self.trainer.step >= step  # failed writing after it
        return held and record_failure(self.lease.storage, self.lease.block, step, err, taken)

    def train_until(self, until: int, on_step: OnStep | None = None) -> None:
        """Train up to ``until`` steps (capped at this block's train.steps, or its
        train.block_steps), writing the history and checkpointing on cadence. The writer
        records an error it meets as the block's failure, and removes it when asked to go on
        (the driver asks again after a passing error, e.g. data storage out of reach)."""
        if self.writer and self._recorded:
            clear_failure(self.checkpoints.storage, self.trainer.block)
            self._recorded = False
        self._at = self.trainer.step + 1
        try:
            self._train_until(until, on_step)
        except BaseException as err:
            if out_of_memory(err):  # said with the keys that make it fit
                said = block_out_of_memory(err, self.cfg, self.trainer.block, self._at,
                                           str(self.trainer.device))
                self._recorded = self._record(self._at, said)
                raise said from err
            self._recorded = self._record(self._at, err)  # the step it was at
            raise

    def _train_until(self, until: int, on_step: OnStep | None) -> None:
        t = self.cfg.train
        steps = t.steps_of(self.trainer.block)
        until = min(until, steps)
        while self.trainer.step < until:
            # the step trained, then its held-out loss, history and checkpoint: an error in
            # those is recorded at the step they follow
            self._at = self.trainer.step + 1
            if not self.writer:  # a replica that is not rank 0 only trains
                stats = self._step()
                if on_step is not None:
                    on_step(stats)
                continue
            if time.monotonic() - self._renewed > t.lease_timeout_s / 4:
                self.lease.check()  # renews it; LeaseLost if another writer took over
                self._renewed = time.monotonic()
            start = time.perf_counter()
            stats = self._step()
            assert self.history is not None
            self.history.observe(stats, time.perf_counter() - start)
            last = stats.step == steps
            heldout = bool(t.heldout_every) and (stats.step % t.heldout_every == 0 or last)
            if heldout:  # before on_step, whose metrics export it
                self.trainer.heldout(self._heldout_batch())
            if on_step is not None:
                on_step(stats)
            checkpoint = stats.step % t.checkpoint_every == 0 or last
            if stats.step % t.log_every == 0 or last or heldout:
                now = checkpoint or self.history.due()  # (an object store's: history.py)
                if now:
                    self.lease.check()  # a fenced-off writer stops before writing a line
                    self._renewed = time.monotonic()
                self.history.write(self.trainer, now)
            if checkpoint:
                self.save()
                self.history.flush()  # lines kept since the last upload, with their checkpoint
            if last:  # a Ray block actor is killed once done: keep its measurements now
                self._keep_measured()

    def _heldout_batch(self) -> Batch:
        """The rows of the block's held-out loss (train.heldout_rows of DataIndex.heldout_split),
        read once."""
        if self._heldout is None:
            split, rows = self.index.heldout_split, self.cfg.train.heldout_rows
            self._heldout = held_out_batch(self.trainer.task, self.index, self.trainer.device,
                                           rows, split)
            log.info("block %d: held-out loss on %d rows of the %s split%s",
                     self.trainer.block, rows_of(self._heldout), split,
                     " (no validation or test rows: a check, not held out)"
                     if split == "train" else "")
        return self._heldout

    def save(self) -> None:
        """Write the training state and the snapshot of the current step."""
        t = self.trainer
        if not self.writer:
            return
        if not t.is_finite():
            log.error("block %d: weights are not finite at step %d; checkpoint not written",
                      t.block, t.step)
            return
        self.lease.check()  # a fenced-off writer stops here, before writing anything
        self._renewed = time.monotonic()
        state = t.state_dict()
        state["data_position"] = self.order.position(t.step)  # where the next batch starts
        self.checkpoints.save("state", t.step, state)
        self.checkpoints.save("snapshot", t.step, t.snapshot())

    @property
    def done(self) -> bool:
        return self.trainer.step >= self.cfg.train.steps_of(self.trainer.block)

    def summary(self) -> dict:
        """This block's row of report.json (restarts are filled in by the runtime):
        training/block_summary.py."""
        return block_summary(self.trainer, self.resumed_from, self.checkpoints.restarts(),
                             {**self._measured(), **self._measured_before()})

    def _measured_before(self) -> dict:
        """What an earlier process measured, when this one trained no step of the block."""
        storage = self.checkpoints.storage
        if self.trained or not storage.exists(self._measured_path):
            return {}
        return storage.read_json(self._measured_path)
