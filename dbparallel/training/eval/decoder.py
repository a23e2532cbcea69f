"""sample.decoder: the user's own autoencoder decoder, which turns a latent network's samples
(data.latents) into images for samples.png and FID (docs/vision.md, Latents). It is imported
by name ("module:function", data/named_function.py) wherever the run is scored: the driver
first tries the import, so that a name that does not import stops the run before it
trains."""

from __future__ import annotations

from collections.abc import Callable

import torch

from dbparallel.data.named_function import named_function
from dbparallel.errors import UserError

DECODE_CHUNK = 64  # latents given to the decoder at a time

Decoder = Callable[[torch.Tensor], torch.Tensor]


def load_decoder(spec: str) -> Decoder:
    """The function ``spec`` ("module:function") names; UserError naming sample.decoder where
    it does not import here or is not a function."""
    return named_function(spec, f"sample.decoder={spec}")


@torch.no_grad()
def decode_latents(spec: str, latents: torch.Tensor,
                   device: str | torch.device = "cpu") -> torch.Tensor:
    """Images (N, 1 or 3, H', W') float32 in [0, 1] on the CPU of ``latents`` (N, C, H, W) as
    the data store them, decoded DECODE_CHUNK at a time on ``device`` by the decoder ``spec``
    names (its values clamped to [0, 1]); UserError naming sample.decoder where it gives
    anything else."""
    decoder, out = load_decoder(spec), []
    for start in range(0, len(latents), DECODE_CHUNK):
        part = latents[start:start + DECODE_CHUNK].to(device)
        images = decoder(part)
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else None
        ok = (shape is not None and len(shape) == 4 and shape[0] == len(part)
              and shape[1] in (1, 3) and images.is_floating_point()
              and (not out or shape[1:] == out[0].shape[1:]))
        if not ok:
            got = f"a tensor of shape {shape}" if shape is not None else type(images).__name__
            raise UserError(f"sample.decoder={spec}: given latents of shape "
                            f"{tuple(part.shape)}, it returned {got}; it must return float "
                            f"images (N, 1 or 3, H, W) in [0, 1], one per latent, all of one "
                            f"size")
        if not torch.isfinite(images).all():
            raise UserError(f"sample.decoder={spec}: it returned NaN or infinite values")
        out.append(images.float().clamp(0, 1).cpu())
    return torch.cat(out)
