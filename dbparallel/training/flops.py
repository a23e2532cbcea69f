"""Model FLOPs of a training step, counted by torch's FLOP formulas, and the rate achieved.

Model FLOPs are the matrix products of the forward and backward passes (linear layers,
convolutions, batched products, attention), at 2 FLOPs per multiply-add; elementwise work and
the optimizer step are not counted, as in the usual MFU (PaLM, App. B). Shapes alone decide the
count, so one step of a block counts every step of it.

The formulas are those of ``torch.utils.flop_counter.FlopCounterMode`` (its registry), applied
in a plain dispatch mode: FlopCounterMode itself also tracks modules with autograd hooks, which
change the order in which gradients are summed (last-bit differences), and a resumed block
would no longer train bit for bit like one that never stopped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils import flop_counter
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten


def _sdpa_cpu(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def _sdpa_cpu_backward(grad_out_shape, query_shape, key_shape, value_shape, *args,
                       out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape,
                                                 value_shape)


# torch counts the CUDA attention kernels; the CPU's fused kernel is counted the same way here.
CPU_ATTENTION: dict[Any, Any] = {
    aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_cpu_backward,
}
FORMULAS: dict[Any, Any] = {
    **flop_counter.flop_registry,
    **{op: flop_counter.shape_wrapper(f) for op, f in CPU_ATTENTION.items()},
}


class _Counter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = FORMULAS.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


class FlopCount:
    """The FLOPs of what runs inside ``counting()`` (forward and backward alike)."""

    def __init__(self) -> None:
        self._counter = _Counter()

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        with self._counter:
            yield

    @property
    def total(self) -> int:
        return int(self._counter.total)


def achieved_tflops(flops_per_step: int | None, steps: int, seconds: float) -> float | None:
    """Model TFLOP/s over ``steps`` steps that took ``seconds``; None if nothing was timed."""
    if not flops_per_step or steps <= 0 or seconds <= 0:
        return None
    return flops_per_step * steps / seconds / 1e12
