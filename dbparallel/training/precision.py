"""Numeric precision: ``train.precision`` = fp32 | tf32 | bf16.

fp32 is exact float32 everywhere. tf32 lets CUDA matmuls and convolutions use TensorFloat-32
(float32 storage, 10-bit mantissa products; no effect on CPU), in training and evaluation.
bf16 runs the training forward pass under autocast to bfloat16 with float32 weights,
gradients and optimizer state, and allows TF32 like tf32; evaluation runs in float32 (TF32 on
CUDA).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch


def set_matmul_precision(precision: str, device: torch.device | str) -> None:
    """Allow TF32 on CUDA for ``tf32`` and ``bf16`` (process-wide). On CPU, flush denormal
    floats to zero: Adam's second moments of tiny gradients fall into the denormal range,
    whose arithmetic is many times slower on x86."""
    if torch.device(device).type != "cuda":
        torch.set_flush_denormal(True)
        return
    fast = precision in ("tf32", "bf16")
    torch.backends.cuda.matmul.allow_tf32 = fast
    torch.backends.cudnn.allow_tf32 = fast


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The forward pass's context: bf16 autocast for ``bf16``, nothing otherwise."""
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


@contextlib.contextmanager
def process_settings_kept() -> Iterator[None]:
    """Put back, after the block, torch's process-wide settings that training changes (its
    thread count, denormal flushing, TF32): a run trained in a program's own process
    (``dbparallel.train(local=True)``) leaves its later torch work as it was."""
    threads, flushing = torch.get_num_threads(), _flushing()
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.set_flush_denormal(flushing)
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32


def _flushing() -> bool:
    """Whether this process flushes denormal floats to zero (``torch.set_flush_denormal``,
    which torch does not report): a denormal double then reads back as 0."""
    return torch.tensor([1e-323], dtype=torch.float64).item() == 0.0


Method = TypeVar("Method", bound=Callable[..., Any])


def in_run_precision(method: Method) -> Method:
    """A method of a composed network (training/network.py: its ``cfg`` and ``device``) run
    under the precision its run trained with (``set_matmul_precision``), the process's own
    settings put back after: a program that loads a network keeps its own TF32 and denormal
    settings for the rest of its work."""
    @functools.wraps(method)
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        with process_settings_kept():
            set_matmul_precision(self.cfg.train.precision, self.device)
            return method(self, *args, **kwargs)

    return run  # type: ignore[return-value]
