"""Byte meter of one training step: parameters, gradients, optimizer state, saved activations.

It counts tensor bytes, not allocator pages, so a CPU run reports what a GPU holds for the same
step, up to kernel choices (fused CUDA attention saves a few extra buffers: under 1% here).
Paper App. G: Adam training of L layers costs (4P + A) L.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class StepMemory:
    """Bytes held by one training step, by kind."""

    params: int
    grads: int
    optimizer: int
    activations: int  # peak bytes saved for backward (saved-tensor hooks)

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer + self.activations

    def to_json(self) -> dict[str, int]:
        return {**asdict(self), "total": self.total}


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of distinct tensors (shared storage counted once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for t in tensors:
        key = (t.untyped_storage().data_ptr(), t.storage_offset())
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
    return total


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of an optimizer's per-parameter state tensors (Adam: exp_avg, exp_avg_sq)."""
    states = optimizer.state.values()
    return tensor_bytes(v for s in states for v in s.values()
                        if isinstance(v, torch.Tensor) and v.dim() > 0)


def measure_step(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, activations: int
) -> StepMemory:
    """Assemble a StepMemory after a step whose saved bytes peaked at ``activations``
    (meta_memory.LiveSavedBytes)."""
    params = list(model.parameters())
    return StepMemory(
        params=tensor_bytes(params),
        grads=tensor_bytes(p for p in params if p.requires_grad),
        optimizer=optimizer_state_bytes(optimizer),
        activations=activations,
    )
