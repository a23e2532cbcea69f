"""The order of a raw pixel list's numbers (``data.pixel_order``), and a guess of it.

A Parquet ``image`` column of raw pixels holds one flat list of C*H*W numbers per row. The
tasks take (C, H, W) images; ``chw`` lists are in that order already (numpy's ``reshape(-1)``
of a (C, H, W) array), ``hwc`` lists are channels last, as ``np.asarray(pil_image).reshape(-1)``
writes them, and are transposed row by row as they are unpacked (``to_chw``). With one channel
both orders are the same numbers.

Read in the other order, colour images still decode without a bad row, into scrambled
images, so the driver compares the two readings of the first training rows (``looks_like``)
and warns when they look like the other order (training/data_warnings.py).
"""

from __future__ import annotations

import numpy as np

# How much rougher (mean |difference| between vertically adjacent values) one reading of the
# rows must be than the other for them to look like the other order. Measured on batches of 16
# RGB images, 300 batches per side of 4, 6, 8, 12, 16, 28, 32 and 64 pixels: random crops of
# six photos (scikit-learn's china.jpg and flower.jpg, matplotlib's grace_hopper.jpg, two of
# circuit boards, an engraving) resized to that side; synthetic images (a colour gradient and
# 1-3 flat discs or rectangles); uniform noise. rough(C, H, W reading) / rough(H, W, C
# reading) of (C, H, W) lists was at most 0.69 (side 4), 0.59 (6), 0.55 (8 and over) for the
# photos and 0.54 for the synthetic images (medians 0.44 and 0.25); of (H, W, C) lists, at
# least 1.30 (side 4), 1.22 (side 6, where a wrong row of 6 values is 2 pixels on), 1.80 (8
# and over) for the photos, 1.21 for the synthetic images (medians 1.7 to 5.0, and 1.8 to 41).
# Noise: 0.88 to 1.12 (16 images of side 4), within 0.96..1.04 from side 8; 0.68 to 1.49 for
# a single 4x4 image. So 1.5 either way: no correctly ordered batch came near it, nor did
# noise, and the wrong order of images of 8 pixels and over always passed it (at sides 4 and
# 6 a few batches of photos go unwarned).
ROUGHER = 1.5


def to_chw(flat: np.ndarray, channels: int, side: int) -> np.ndarray:
    """(N, C*H*W) rows of (H, W, C) pixel lists as new contiguous (N, C*H*W) rows of
    (C, H, W), of the same dtype."""
    rows = flat.reshape(-1, side, side, channels).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(rows).reshape(len(rows), -1)


def roughness(flat: np.ndarray, channels: int, side: int, order: str) -> float:
    """Mean |difference| between vertically adjacent values of the (N, C*H*W) rows ``flat``
    read as ``order`` (``chw`` or ``hwc``)."""
    rows = flat.reshape(-1, channels, side, side) if order == "chw" else \
        flat.reshape(-1, side, side, channels).transpose(0, 3, 1, 2)
    return float(np.abs(np.diff(rows.astype(np.float64), axis=2)).mean())


def looks_like(flat: np.ndarray, channels: int, side: int) -> str | None:
    """``chw`` or ``hwc`` where one reading of the rows ``flat`` is ROUGHER times smoother
    than the other (natural images are smooth under their own order); None where neither is
    (noise, flat images, images of one pixel row)."""
    if side < 2 or channels < 2 or not len(flat):
        return None
    chw, hwc = (roughness(flat, channels, side, order) for order in ("chw", "hwc"))
    if chw > ROUGHER * hwc:
        return "hwc"
    if hwc > ROUGHER * chw:
        return "chw"
    return None
