"""Random flips and crops of the training images (``train.augment``).

Only the training loss augments; evaluation, prediction and sampling see the images as they
are. Like the loss's noise, every draw is made for the step's global batch (``share.total``
rows) from the step's generator and cut to this process's rows, so replicas and micro-batches
together augment exactly as one process does for the whole batch, and a resumed block sees the
same images. The draws are made where the step's generator is (the block's device).
"""

from __future__ import annotations

import copy
from typing import TypeVar

import torch
import torch.nn.functional as F

KINDS = ("none", "flip", "crop", "flip_crop")
T = TypeVar("T")


def unaugmented(task: T) -> T:
    """A shallow copy of ``task`` whose loss sees the images as they are (the held-out scores);
    a task without augmentation (text) is copied as it is."""
    clone = copy.copy(task)
    if hasattr(clone, "augment"):
        clone.augment = "none"  # type: ignore[attr-defined]
    return clone


def crop_padding(image_size: int) -> int:
    """Pixels of edge padding on each side before a random crop: image_size / 8, at least 1."""
    return max(1, image_size // 8)


def augment_draws(kind: str, total: int, image_size: int,
                  generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The draws of ``kind`` for a global batch of ``total`` images, on the generator's device,
    in order: one flip flag per row (``flip``), then one (row, column) crop offset per row
    (``offset``). ``none`` draws nothing."""
    assert kind in KINDS, kind
    out, device = {}, generator.device
    if kind in ("flip", "flip_crop"):
        out["flip"] = torch.rand(total, generator=generator, device=device) < 0.5  # (N,)
    if kind in ("crop", "flip_crop"):
        pad = crop_padding(image_size)
        out["offset"] = torch.randint(0, 2 * pad + 1, (total, 2), generator=generator,
                                      device=device)  # (N, 2)
    return out


def augment(images: torch.Tensor, draws: dict[str, torch.Tensor]) -> torch.Tensor:
    """``images`` (N, C, H, W) flipped and/or cropped as ``draws`` (``augment_draws``, cut to
    these rows) say; without a flip or offset draw, ``images`` itself."""
    if "flip" in draws:
        images = flip_rows(images, draws["flip"])
    if "offset" in draws:
        images = crop_rows(images, draws["offset"], crop_padding(images.shape[-1]))
    return images


def flip_rows(images: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """``images`` (N, C, H, W) mirrored left to right where ``flip`` (N,) is true."""
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)


def crop_rows(images: torch.Tensor, offsets: torch.Tensor, pad: int) -> torch.Tensor:
    """Each image (N, C, H, W) padded by ``pad`` edge pixels on each side, then cut back to
    H x W with its top-left corner at ``offsets`` (N, 2) = (row, column) in [0, 2 pad] of
    the padded image; an offset of (pad, pad) gives the image back."""
    n, c, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")  # (N, C, H+2p, W+2p)
    rows = offsets[:, :1] + torch.arange(h, device=images.device)  # (N, H)
    cols = offsets[:, 1:] + torch.arange(w, device=images.device)  # (N, W)
    strip = padded.gather(2, rows.view(n, 1, h, 1).expand(n, c, h, w + 2 * pad))  # (N, C, H, W+2p)
    return strip.gather(3, cols.view(n, 1, 1, w).expand(n, c, h, w))  # (N, C, H, W)
