"""Minimal PNG writer for sample grids (8-bit grey or RGB)."""

from __future__ import annotations

import struct
import zlib

import torch


def grid(images: torch.Tensor, rows: int, pad: int = 1) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> one (C, rows*(H+pad)+pad, cols*(W+pad)+pad) image."""
    n, c, h, w = images.shape
    cols = (n + rows - 1) // rows
    out = torch.ones(c, rows * (h + pad) + pad, cols * (w + pad) + pad)
    for i, img in enumerate(images):
        r, col = divmod(i, cols)
        out[:, pad + r * (h + pad):pad + r * (h + pad) + h,
            pad + col * (w + pad):pad + col * (w + pad) + w] = img
    return out


def encode_png(image: torch.Tensor, scale: int = 1) -> bytes:
    """PNG bytes of a (C, H, W) image in [0, 1] with C in {1, 3}, upscaled by ``scale``."""
    c, h, w = image.shape
    if c not in (1, 3):
        raise ValueError(f"PNG needs 1 or 3 channels, got {c}")
    pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8)
    pixels = pixels.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    rows = pixels.permute(1, 2, 0).reshape(h * scale, -1).numpy()
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", w * scale, h * scale, 8, 0 if c == 1 else 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
