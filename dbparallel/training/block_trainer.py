"""Training of one block: model, AdamW, EMA, one step at a time, and its state.

The trainer holds only its own block's parameters and optimizer state, and needs nothing from
any other block: this is what lets B trainers run on B devices with no traffic between them.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from dbparallel.config import Config, config_hash, to_dict
from dbparallel.core.memory import StepMemory, measure_step
from dbparallel.core.meta_memory import LiveSavedBytes
from dbparallel.models.block import Block
from dbparallel.tasks import Task, build_task
from dbparallel.tasks.augment import unaugmented
from dbparallel.tasks.base import Batch, Draws, rows_of, share_draws
from dbparallel.training.compiling import compiled, keeps_grads
from dbparallel.training.flops import FlopCount, achieved_tflops
from dbparallel.training.peaks import device_peak_tflops, mfu
from dbparallel.training.plan import model_flops_per_step
from dbparallel.training.precision import autocast, set_matmul_precision
from dbparallel.training.replicas import Replicas
from dbparallel.training.schedule import learning_rate
from dbparallel.training.seeding import derive_seed, generator
from dbparallel.training.step_pieces import pieces


class NonFiniteLoss(RuntimeError):
    """A NaN/Inf loss with ``train.nonfinite=stop``."""


@dataclass(frozen=True)
class StepStats:
    """What one step did; exporters (progress, metrics) read these."""

    step: int  # steps completed after this one
    loss: float  # mean weighted loss of the batch (nan if non-finite)
    finite: bool
    step_time_s: float
    samples: int
    data_wait_s: float = 0.0  # the training thread's wait for this step's batch (BlockRun)


class BlockTrainer:
    """One block's network, optimizer and EMA; ``train_step`` advances it by one batch."""

    def __init__(
        self, cfg: Config, block: int, device: str | torch.device = "cpu",
        task: Task | None = None, replicas: Replicas | None = None,
    ):
        if not 0 <= block < cfg.model.blocks:
            raise ValueError(f"block {block} is outside model.blocks={cfg.model.blocks}")
        self.cfg, self.block, self.device = cfg, block, torch.device(device)
        set_matmul_precision(cfg.train.precision, self.device)
        self.task = task or build_task(cfg)
        self.sigma_range = self.task.partition.ranges[block]
        # with replicas, this process trains its share of every global batch (the weights
        # start equal: the same seed; they stay equal: the same summed gradients)
        self.replicas = replicas
        self.share = replicas.share(cfg.train.batch_size) if replicas else None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(cfg.run.seed, "init", block))
            self.model: Block = self.task.build_block(block).to(self.device)
        self.ema: Block = copy.deepcopy(self.model).requires_grad_(False).eval()
        self.model.checkpoint_layers(cfg.train.checkpoint_layers)
        # listed once: Module.parameters() walks every submodule in Python, and the clipping
        # and EMA update run after the step's wait for the device, while it idles (loading a
        # state copies into these same tensors)
        self.params = list(self.model.parameters())
        self.ema_params = list(self.ema.parameters())
        t = cfg.train
        # fused: one kernel for the whole update on CUDA; the CPU keeps the reference loop
        self.optimizer = torch.optim.AdamW(
            self.params, lr=t.lr, weight_decay=t.weight_decay,
            fused=self.device.type == "cuda",
        )
        self.step = 0
        self.nonfinite_steps = 0
        self.recent_losses: list[float] = []  # finite losses of the last log_every steps
        self.heldout_loss: float | None = None  # the latest ``heldout``, at heldout_step
        self.heldout_step = -1
        self.memory: StepMemory | None = None  # measured on each process's first step
        self.model_flops_per_step: int | None = None  # counted on this trainer's first step
        self.peak_tflops = device_peak_tflops(self.device, t.precision)
        self.timed_steps, self.timed_s = 0, 0.0  # steady steps of this process (no counting,
        # no compiling): the rate of achieved_tflops
        # train.compile: compiled once per trainer (training/compiling.py)
        self._forward_loss = compiled(self._loss, cfg) if t.compile else self._loss
        self._fast_steps = 0  # steps through self._forward_loss
        # CUDA graphs reuse an unset .grad's memory: gradients are zeroed, never freed
        self._keep_grads = keeps_grads(cfg)

    # ------------------------------------------------------------------ training
    def lr_at(self, step: int) -> float:
        """The learning rate of ``step`` (training/schedule.py)."""
        return learning_rate(self.cfg.train, self.cfg.train.steps_of(self.block), step)

    def _loss(self, batch: Batch, draws: Draws, total: int | None) -> torch.Tensor:
        """The mean weighted loss of ``batch`` given its ``draws`` (what train.compile
        compiles, with backward); with the global batch's ``total`` rows, this part of its
        mean (a share's or a piece's). Every piece passes the same arguments but its rows, so
        the pieces share one compiled graph."""
        with autocast(self.cfg.train.precision, self.device):
            per_sample = self.task.loss_on(self.model, batch, self.block, draws).float()
        return per_sample.sum() / total if total else per_sample.mean()

    def train_step(self, batch: Batch) -> StepStats:
        """One optimizer step on ``batch`` (tensors on this trainer's device)."""
        start = time.perf_counter()
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.step)
        if not self.model.training:  # train() walks every submodule in Python, every step
            self.model.train()
        # The saved-tensor hooks and the FLOP counter cost time on every tensor: measure this
        # process's first step only (every step has the same shapes; a resumed block measures
        # again, as its pieces or checkpointing may have changed since its checkpoint), and
        # eagerly (a compiled graph hides both its saved tensors and its operations). A
        # piece's saved tensors are freed by its backward: the step's peak is the largest's.
        measuring = self.model_flops_per_step is None
        count = FlopCount() if measuring else None
        saved_peak = 0
        total: torch.Tensor | None = None
        with count.counting() if count else contextlib.nullcontext():
            for piece, share in pieces(batch, self.share, self.cfg.train.micro_batches):
                g = generator(self.cfg.run.seed, "step", self.block, self.step,
                              device=self.device)
                # the piece's saved bytes through forward and backward as autograd frees them
                # (a checkpointed network peaks in backward, as its layers save again)
                meter = LiveSavedBytes(self.params) if measuring else None
                with meter.record() if meter else contextlib.nullcontext():
                    # the piece's draws, held by nothing after its forward pass: its noise
                    # is gone before backward (autograd keeps what it needs)
                    loss = (self._loss if measuring else self._forward_loss)(
                        piece, share_draws(self.task, self.block, piece, share, g),
                        share.total if share else None)
                    # a copy: CUDA graphs (reduce-overhead) reuse the output's memory
                    part = loss.detach().clone()
                    loss.backward()  # checkpointed layers save again in backward
                if meter:
                    saved_peak, meter = max(saved_peak, meter.peak), None
                total = part if total is None else total + part
            assert total is not None
            if self.replicas:  # the global loss comes with the gradients: one all-reduce
                total = self.replicas.sum_gradients(self.params, total)
                assert total is not None
        # The step's one wait for the device, after its forward and backward passes are all
        # queued: a non-finite loss (any piece's, any replica's) discards the gradients.
        value = float(total.sum())
        finite = math.isfinite(value)
        n = self.share.total if self.share else rows_of(batch)
        if not finite:
            self.nonfinite_steps += 1
            self.optimizer.zero_grad(set_to_none=not self._keep_grads)
            if self.cfg.train.nonfinite == "stop":  # the step its metrics line would name
                raise NonFiniteLoss(f"block {self.block}: loss is {value} taking step "
                                    f"{self.step + 1} (train.nonfinite=stop)")
            self.step += 1
            return StepStats(self.step, math.nan, False, time.perf_counter() - start, n)
        if count is not None:  # checkpointed: the model's, without the layers run again
            self.model_flops_per_step = model_flops_per_step(self.cfg, self.block) \
                if self.cfg.train.checkpoint_layers else count.total
        if self.cfg.train.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.train.grad_clip)
        self.optimizer.step()
        if measuring:
            self.memory = measure_step(self.model, self.optimizer, saved_peak)
        self.optimizer.zero_grad(set_to_none=not self._keep_grads)
        self._update_ema()
        self.step += 1
        self.recent_losses = (self.recent_losses + [value])[-self.cfg.train.log_every:]
        seconds = time.perf_counter() - start
        if not measuring:
            self._fast_steps += 1
            if self._fast_steps > 1 or not self.cfg.train.compile:  # not the compiling step
                self.timed_steps += 1
                self.timed_s += seconds
        return StepStats(self.step, value, True, seconds, n)

    @torch.no_grad()
    def heldout(self, batch: Batch) -> float:
        """The mean weighted loss of the EMA weights on held-out ``batch`` (train.heldout_every)
        in float32 (evaluation), with the same noise draws every time and no augmentation
        (label dropout, part of the training loss, included), in pieces of at most a training
        piece's rows (the draws are made for the whole batch and cut, as in a step; another
        piece size changes the sum's rounding only); kept as ``heldout_loss`` of this step."""
        task = unaugmented(self.task)
        rows = rows_of(batch)
        step_rows = self.share.rows if self.share else self.cfg.train.batch_size
        size = -(-step_rows // self.cfg.train.micro_batches)
        g = generator(self.cfg.run.seed, "heldout", self.block, device=self.device)
        draws = share_draws(task, self.block, batch, None, g)
        total = 0.0
        for start in range(0, rows, size):  # (the EMA network is always in eval mode)
            part = slice(start, min(rows, start + size))
            total += float(task.loss_on(self.ema, {k: v[part] for k, v in batch.items()},
                                        self.block, {k: v[part] for k, v in draws.items()}
                                        ).float().sum())
        self.heldout_loss, self.heldout_step = total / rows, self.step
        return self.heldout_loss

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = self.cfg.train.ema_decay
        if not decay:
            self.ema.load_state_dict(self.model.state_dict())
            return
        # Warm-up of the average: early weights are forgotten quickly.
        decay = min(decay, (1 + self.step) / (10 + self.step))
        # one multi-tensor kernel for all parameters on CUDA (the CPU loops over them)
        torch._foreach_lerp_(self.ema_params, self.params, 1 - decay)

    @property
    def achieved_tflops(self) -> float | None:
        """Model TFLOP/s over this process's steady steps; None before one was timed."""
        return achieved_tflops(self.model_flops_per_step, self.timed_steps, self.timed_s)

    @property
    def mfu(self) -> float | None:
        """achieved_tflops / the device's dense peak at train.precision (None: CPU, unknown)."""
        return mfu(self.achieved_tflops, self.peak_tflops)

    @property
    def final_loss(self) -> float:
        """Mean loss over the last ``train.log_every`` finite steps."""
        return sum(self.recent_losses) / len(self.recent_losses) if self.recent_losses else math.nan

    def is_finite(self) -> bool:
        # one read from the device for all parameters, not one per parameter
        return bool(torch.stack([torch.isfinite(p).all() for p in self.params])
                    .all())

    # ------------------------------------------------------------------ state
    def meta(self) -> dict[str, Any]:
        """What identifies this block's network: assembly refuses disagreeing blocks."""
        return {
            "block": self.block,
            "blocks": self.cfg.model.blocks,
            "task": self.cfg.task,
            "step": self.step,
            "sigma_range": list(self.sigma_range),
            "partition": self.task.partition.to_json(),
            "config_hash": config_hash(self.cfg),
            "config": to_dict(self.cfg),
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything the next step depends on but its data position (BlockRun.save adds
        ``data_position``: a resume with another train.batch_size goes on from it)."""
        return {
            "meta": self.meta(),
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "nonfinite_steps": self.nonfinite_steps,
            "recent_losses": list(self.recent_losses),
            "memory": self.memory.to_json() if self.memory else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        # this device's fused flag, not the saved one (set before: a fused step moves there),
        # and this config's train.weight_decay, which a resume may change (the rate is set
        # every step): torch would restore the saved group's own
        optim = state["optimizer"]
        now = {k: self.optimizer.defaults[k] for k in ("fused", "weight_decay")}
        self.optimizer.load_state_dict(
            {**optim, "param_groups": [{**g, **now} for g in optim["param_groups"]]})
        self.step = int(state["step"])
        self.nonfinite_steps = int(state["nonfinite_steps"])
        self.recent_losses = [float(x) for x in state["recent_losses"]]
        mem = state.get("memory")
        if mem:
            mem = {k: v for k, v in mem.items() if k != "total"}
            self.memory = StepMemory(**mem)

    def snapshot(self) -> dict[str, Any]:
        """EMA weights and meta: all the assembly needs of this block."""
        return {"meta": self.meta(), "ema": self.ema.state_dict()}
