"""Dense peak FLOP/s of CUDA devices by precision: the denominator of MFU.

Vendor datasheet numbers without structured sparsity, per GPU, in TFLOP/s. ``train.precision``
picks the column: fp32 is plain float32 (TF32 off), tf32 the TF32 tensor cores, bf16 the
bfloat16 tensor cores (the autocast forward pass; its float32 remainder is a small share of the
FLOPs). A device not listed, a MIG slice (a fraction of a card) and the CPU have no peak: their
MFU is left out rather than guessed.
"""

from __future__ import annotations

import re

import torch

PRECISION_COLUMNS = ("bf16", "fp16", "tf32", "fp32")

# (pattern searched in torch.cuda.get_device_name(), label, {precision: dense TFLOP/s}).
# First match wins: the specific names come before the ones they contain ("GH200" holds
# "H200", "A100" holds "A10").
PEAKS: tuple[tuple[str, str, dict[str, float]], ...] = (
    (r"GH200", "GH200", {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    (r"H200 NVL", "H200 NVL", {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60.0}),
    (r"H200", "H200 SXM", {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    (r"H100 NVL", "H100 NVL", {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60.0}),
    (r"H100 PCIe", "H100 PCIe", {"bf16": 756.5, "fp16": 756.5, "tf32": 378.0, "fp32": 51.2}),
    (r"H100", "H100 SXM", {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    (r"A100", "A100", {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5}),
    (r"L40S", "L40S", {"bf16": 362.1, "fp16": 362.1, "tf32": 183.0, "fp32": 91.6}),
    (r"\bL4\b", "L4", {"bf16": 121.0, "fp16": 121.0, "tf32": 60.0, "fp32": 30.3}),
    (r"\bA10\b", "A10", {"bf16": 125.0, "fp16": 125.0, "tf32": 62.5, "fp32": 31.2}),
)

PEAK_LABELS = tuple(label for _, label, _ in PEAKS)


def _row(device_name: str) -> tuple[str, dict[str, float]] | None:
    """(label, peaks) of the first row ``device_name`` matches (any case); None when none
    does or it is a MIG slice."""
    if "MIG" in device_name:
        return None
    return next(((label, peaks) for pattern, label, peaks in PEAKS
                 if re.search(pattern, device_name, re.IGNORECASE)), None)


def peak_label(device_name: str) -> str | None:
    """The table's name of the row ``device_name`` matches, e.g. "H100 SXM" for "h100"."""
    row = _row(device_name)
    return row[0] if row else None


def peak_tflops(device_name: str, precision: str) -> float | None:
    """Dense peak TFLOP/s of the device named ``device_name`` (any case) at ``precision``;
    None when unknown (an unlisted device or a MIG slice)."""
    if precision not in PRECISION_COLUMNS:
        raise ValueError(f"precision {precision!r}: expected one of {PRECISION_COLUMNS}")
    row = _row(device_name)
    return row[1][precision] if row else None


def device_peak_tflops(device: torch.device | str, precision: str) -> float | None:
    """``peak_tflops`` of ``device``; None on the CPU."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return peak_tflops(torch.cuda.get_device_name(device), precision)


def mfu(achieved: float | None, peak: float | None) -> float | None:
    """Model FLOPs utilisation: achieved / peak TFLOP/s; None when either is unknown."""
    return achieved / peak if achieved is not None and peak else None
