"""The plan's count of a block's step against what a real CPU step of BlockTrainer allocates.

The allocator's live bytes come from torch's profiler (its CPU memory events carry the bytes
allocated and not yet freed while it records), plus what was alive before the step: the
weights, the EMA, Adam's moments and the batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch._C._profiler import _EventType

from dbparallel.config.loading import load_config
from dbparallel.core.memory import tensor_bytes
from dbparallel.core.meta_memory import LiveTensorBytes
from dbparallel.training.block_trainer import BlockTrainer
from dbparallel.training.plan import step_bytes

ROOT = Path(__file__).resolve().parents[2]


def _allocated_peak(step) -> int:
    """The most bytes the CPU allocator held at once while ``step()`` ran, of those it
    allocated in it."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                profile_memory=True) as prof:
        step()
    events, todo = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while todo:
        node = todo.pop()
        todo.extend(node.children)
        if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
            f = node.extra_fields
            events.append((node.start_time_ns, f.total_allocated, f.alloc_size))
    events.sort()
    before = events[0][1] - events[0][2]  # what earlier recordings left allocated
    return max(total for _, total, _ in events) - before


def _trainer(recipe: str, *overrides: str) -> tuple[BlockTrainer, dict[str, torch.Tensor]]:
    cfg = load_config([ROOT / "jobs" / recipe], list(overrides))
    trainer = BlockTrainer(cfg, 0, "cpu")
    return trainer, trainer.task.example_batch(cfg.train.batch_size, "cpu")


@pytest.mark.parametrize("recipe, overrides", [
    ("vit_tiny.yaml", ["train.checkpoint_layers=true"]),
    ("dit_fashion_tiny.yaml", []),
    ("mdm_shakespeare_tiny.yaml", ["train.checkpoint_layers=true", "train.micro_batches=2"]),
    # counted in float32, these bf16 steps were 38% below the plan. The plan runs CUDA's
    # autocast lists (core/meta_autocast.py), the CPU its own: they differ in what these
    # steps hold only where a norm's input is bfloat16 (CUDA computes layer_norm in float32),
    # which the AR and looped LMs' is (there the plan is 9% above the CPU's peak)
    ("dit_fashion_tiny.yaml", ["train.precision=bf16"]),
    ("dit_fashion_tiny.yaml", ["train.precision=bf16", "train.checkpoint_layers=true"]),
    ("mdm_shakespeare_tiny.yaml", ["train.precision=bf16"]),
])
def test_plan_holds_a_real_steps_peak(recipe: str, overrides: list[str]) -> None:
    # the gradients of the activations and a checkpointed layer's recomputed outputs live
    # beside the saved bytes in backward; counting the saved bytes alone put these steps'
    # allocator peaks 7-27% above the plan
    trainer, batch = _trainer(recipe, *overrides)
    trainer.train_step(batch)  # Adam's moments are made in the first step
    before = tensor_bytes([*trainer.params, *trainer.ema_params, *batch.values()]) + \
        sum(tensor_bytes(s.values()) for s in trainer.optimizer.state.values())
    measured = before + _allocated_peak(lambda: trainer.train_step(batch))
    planned = step_bytes(trainer.cfg, 0, count_flops=False)["total"]
    # within a percent of it or above (a few scalars of the trainer's are not counted)
    assert 0.99 * measured <= planned <= 1.1 * measured


def test_the_measuring_step_holds_no_more_than_a_later_one() -> None:
    # the first step's byte meter must not keep the saved tensors alive through backward
    trainer, batch = _trainer("dit_fashion_tiny.yaml")
    peaks = []
    for _ in range(2):
        with LiveTensorBytes() as live:
            trainer.train_step(batch)
        peaks.append(live.peak())
    assert trainer.memory is not None
    assert peaks[0] <= 1.02 * peaks[1]
