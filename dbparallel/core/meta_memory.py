"""Exact bytes of one training step from shapes alone: a live saved-bytes meter that runs on
the meta device, with the attention kernel a real CPU step runs.

``dbparallel plan`` and benchmarks/memory.py measure with these; tests check that the meta
numbers equal a real CPU step's.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class LiveSavedBytes:
    """Bytes saved for backward that are alive, through forward *and* backward; ``peak``.

    The byte meter of core/memory.py stops at the end of the forward pass, where a plain
    network's saved bytes peak. With activation checkpointing the peak comes in backward, when
    a layer is recomputed, so this meter also counts saved tensors as autograd frees them.
    Like the byte meter it counts a storage once and leaves parameters out; unlike it, a
    storage stops counting when autograd lets go of it, so a branch the forward pass drops is
    not counted past that point. Storages are told apart by their StorageImpl, which the meta
    device has too (its data pointers are all 0).
    """

    def __init__(self, exclude: list[torch.Tensor]):
        self._exclude = {_storage_id(t) for t in exclude}
        self._refs: dict[int, int] = {}
        self._bytes: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def _pack(self, t: torch.Tensor) -> Any:
        key = _storage_id(t)
        if key in self._exclude:
            return t
        if key not in self._refs:
            self._refs[key] = 0
            self._bytes[key] = t.untyped_storage().nbytes()
            self.current += self._bytes[key]
            self.peak = max(self.peak, self.current)
        self._refs[key] += 1
        return _Held(t, key, self)

    def _release(self, key: int) -> None:
        self._refs[key] -= 1
        if self._refs[key] == 0:
            del self._refs[key]
            self.current -= self._bytes.pop(key)

    @contextmanager
    def record(self) -> Iterator[LiveSavedBytes]:
        unpack = lambda held: held.tensor if isinstance(held, _Held) else held  # noqa: E731
        with torch.autograd.graph.saved_tensors_hooks(self._pack, unpack):
            yield self


class _Held:
    """A saved tensor as autograd keeps it; its release is the tensor leaving the graph."""

    __slots__ = ("tensor", "key", "meter")

    def __init__(self, tensor: torch.Tensor, key: int, meter: LiveSavedBytes):
        self.tensor, self.key, self.meter = tensor, key, meter

    def __del__(self) -> None:
        self.meter._release(self.key)


class LiveTensorBytes(TorchDispatchMode):
    """Bytes of the tensors the operations run inside it allocate that are alive, saved for
    backward or not; ``peak(leave_out)`` is their high mark.

    Saved tensors are not all a step holds: the gradients of the activations in backward, a
    checkpointed layer's recomputed outputs while its gradients are made and the loss's own
    intermediates live beside them (on a checkpointed tiny ViT block, a quarter more than
    the saved bytes' peak). An operation's output that aliases none of its inputs is a new
    allocation; it counts until its storage is freed (a storage's Python object lives as long
    as the storage, on the meta device too), so the count is an allocator's, without its
    rounding or caching.
    """

    def __init__(self) -> None:
        super().__init__()
        self._events: list[tuple[int, int]] = []  # (allocation number, +bytes or -bytes)
        self._alive: dict[int, int] = {}  # storage id -> allocation number

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (),
                           kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if any(r.alias_info is not None for r in func._schema.returns):
            return out  # a view or an in-place result: no new storage
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._allocated(t.untyped_storage())
        return out

    def _allocated(self, storage: torch.UntypedStorage) -> None:
        key = storage._cdata
        if key in self._alive or storage.nbytes() == 0:
            return
        number, size = len(self._events), storage.nbytes()
        self._alive[key] = number
        self._events.append((number, size))
        weakref.finalize(storage, self._freed, key, number, size)

    def _freed(self, key: int, number: int, size: int) -> None:
        if self._alive.get(key) == number:
            del self._alive[key]
        self._events.append((number, -size))

    def peak(self, keep: list[torch.Tensor] | None = None) -> int:
        """The most bytes alive at once of those freed by now and of ``keep``'s (the
        parameters' gradients): what else outlives the step (tables cached for later steps,
        the loss) is left out of the whole timeline, so a count is the same the first time
        and after."""
        kept = {_storage_id(t) for t in keep or []}
        skip = {n for key, n in self._alive.items() if key not in kept}
        current = top = 0
        for number, size in list(self._events):
            if number not in skip:
                current += size
                top = max(top, current)
        return top


def _storage_id(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata


@contextmanager
def cpu_attention_on_meta() -> Iterator[None]:
    """On meta tensors, run the CPU's fused attention instead of the math fallback.

    The meta device has no fused kernel, so scaled_dot_product_attention would take the math
    path there and save every (T x T) attention matrix, which neither the CPU nor CUDA saves:
    that overstates a DiT-S/2 step by a third. The CPU kernel's meta function saves what a CPU
    step saves (q, k, v, output, log-sum-exp)."""
    original = F.scaled_dot_product_attention

    def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                  attn_mask: torch.Tensor | None = None, dropout_p: float = 0.0,
                  is_causal: bool = False, scale: float | None = None,
                  enable_gqa: bool = False) -> torch.Tensor:
        if q.device.type != "meta" or enable_gqa:
            return original(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p,
                            is_causal=is_causal, scale=scale, enable_gqa=enable_gqa)
        if attn_mask is not None and attn_mask.dtype == torch.bool:
            # as the CPU path does before its kernel: True = 0, False = -inf, saved as float
            attn_mask = torch.zeros(attn_mask.shape, dtype=q.dtype, device=q.device).masked_fill(
                ~attn_mask, float("-inf"))
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, dropout_p, is_causal, attn_mask=attn_mask, scale=scale)[0]

    with mock.patch.object(F, "scaled_dot_product_attention", attention):
        yield
