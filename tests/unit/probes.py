"""Helpers of the trainer tests: random batches of a task's shapes, and the gradients each
optimizer step of a trainer applies."""

from __future__ import annotations

from typing import Any

import torch


def random_batch(task: Any, n: int, seed: int) -> dict[str, torch.Tensor]:
    """``n`` rows of ``task``'s batch shapes: floats uniform in [-1, 1], integers in 0..3."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, x in task.example_batch(n, "cpu").items():
        out[key] = (torch.rand(x.shape, generator=g) * 2 - 1 if x.is_floating_point()
                    else torch.randint(0, 4, x.shape, generator=g).to(x.dtype))
    return out


def recorded_gradients(trainer: Any) -> list[list[torch.Tensor]]:
    """The gradients each later optimizer step of ``trainer`` applies (after clipping),
    filled in as it steps."""
    seen: list[list[torch.Tensor]] = []
    step = trainer.optimizer.step

    def record(*args, **kwargs):
        seen.append([p.grad.clone() for p in trainer.model.parameters() if p.grad is not None])
        return step(*args, **kwargs)

    trainer.optimizer.step = record
    return seen
