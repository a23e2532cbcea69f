"""`dbparallel plan`: the partition and per-block sizes of a config, without training."""

from __future__ import annotations

from contextlib import AbstractContextManager, ExitStack
from typing import Any

import torch

from dbparallel.config import Config
from dbparallel.core.meta_memory import LiveSavedBytes, cpu_attention_on_meta
from dbparallel.tasks import build_task
from dbparallel.training.seeding import generator

ADAM_COPIES = 4  # parameters, gradients and Adam's two moments (paper App. G: 4P)


def step_bytes(cfg: Config, block: int = 0, device: str = "meta",
               context: AbstractContextManager | None = None) -> dict[str, int]:
    """Bytes of one training step of ``block``, from shapes alone on the meta device (or a
    real step on ``device``): 4P for parameters, gradients and Adam, and the peak bytes saved
    for backward through forward and backward, with the block's private stem and head apart.
    ``context`` wraps the step (benchmarks/memory.py checkpoints layers with it)."""
    task = build_task(cfg)
    with torch.device(device):
        net = task.build_block(block)
    split = net.parameter_split()
    size = next(net.parameters()).element_size()
    batch = task.example_batch(cfg.train.batch_size, device)
    meter = LiveSavedBytes(exclude=list(net.parameters()))
    with ExitStack() as stack:
        stack.enter_context(cpu_attention_on_meta())
        if context is not None:
            stack.enter_context(context)
        with meter.record():
            task.loss(net, batch, block, generator(cfg.run.seed, "plan")).mean().backward()
    params = ADAM_COPIES * split["total"] * size
    stem = ADAM_COPIES * split["stem_and_head"] * size
    return {"params_and_optimizer": params, "activations": meter.peak,
            "total": params + meter.peak, "stem_and_head": stem}


def plan(cfg: Config) -> dict[str, Any]:
    """The plan as JSON-ready data (the shape of `dbparallel plan --json`)."""
    task = build_task(cfg)
    p = task.partition
    nominal = [p.nominal_range(b) for b in range(p.blocks)]
    params = []
    for b in range(p.blocks):
        with torch.device("meta"):
            params.append(sum(x.numel() for x in task.build_block(b).parameters()))
    return {
        "blocks": p.blocks,
        "sigma_boundaries": list(p.boundaries),
        "ranges": [list(r) for r in p.ranges],
        "nominal_ranges": [list(r) for r in nominal],
        "mass": [task.noise.mass(lo, hi) for lo, hi in nominal],
        "layers_per_block": cfg.model.layers_per_block,
        "params_per_block": params,
        "estimated_memory_bytes": [step_bytes(cfg, b)["total"] for b in range(p.blocks)],
    }


def plan_table(cfg: Config, result: dict[str, Any]) -> str:
    """A human-readable table of ``plan(cfg)``."""
    lines = [f"task {cfg.task}: {result['blocks']} blocks x {result['layers_per_block']} layers "
             f"(depth {cfg.model.depth}), overlap gamma={cfg.noise.gamma}",
             f"{'block':>5} {'t range' if cfg.task == 'mdm' else 'sigma range':>22} "
             f"{'with overlap':>22} {'mass':>6} "
             f"{'params':>11} {'train memory':>13}"]
    for b in range(result["blocks"]):
        lo, hi = result["nominal_ranges"][b]
        wlo, whi = result["ranges"][b]
        lines.append(
            f"{b:>5} {f'[{lo:.4g}, {hi:.4g}]':>22} {f'[{wlo:.4g}, {whi:.4g}]':>22} "
            f"{result['mass'][b]:>6.3f} {result['params_per_block'][b]:>11,} "
            f"{result['estimated_memory_bytes'][b] / 2**20:>9.1f} MiB")
    lines.append("block 0 runs first at inference (highest noise); memory is one training step "
                 f"at train.batch_size={cfg.train.batch_size} (parameters, gradients, Adam, "
                 "activations)")
    return "\n".join(lines)
