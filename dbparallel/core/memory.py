"""Byte meter of one training step: parameters, gradients, optimizer state, saved activations.

It counts tensor bytes, not allocator pages, so a CPU run reports what a GPU holds for the same
step, up to kernel choices (fused CUDA attention saves a few extra buffers: under 1% here).
Paper App. G: Adam training of L layers costs (4P + A) L.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
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


class SavedTensorMeter:
    """Counts bytes autograd saves for backward while active; ``peak`` is their high mark.

    Tensors saved for backward live until backward frees them, so the sum at the end of the
    forward pass is the activation peak. Parameters saved by layers are excluded (counted as
    parameters), and a storage saved twice is counted once. The meter holds every storage it
    counted until it is dropped, so a freed address reused by a later tensor is never mistaken
    for one already counted: the count is the same on every run (a tensor saved and then
    discarded within the forward pass counts too, an upper bound).
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()):
        self._exclude = {t.untyped_storage().data_ptr() for t in exclude}
        self._seen: dict[int, torch.UntypedStorage] = {}
        self.current = 0
        self.peak = 0

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        if t.device.type == "meta":  # shape-only estimate: no storage to deduplicate by
            self.current += t.numel() * t.element_size()
            self.peak = max(self.peak, self.current)
            return t
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in self._exclude and ptr not in self._seen:
            self._seen[ptr] = storage
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)
        return t

    @contextmanager
    def record(self) -> Iterator[SavedTensorMeter]:
        with torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t):
            yield self


def measure_step(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, activations: int
) -> StepMemory:
    """Assemble a StepMemory after a step that ``SavedTensorMeter`` recorded."""
    params = list(model.parameters())
    return StepMemory(
        params=tensor_bytes(params),
        grads=tensor_bytes(p for p in params if p.requires_grad),
        optimizer=optimizer_state_bytes(optimizer),
        activations=activations,
    )
