"""What the image tasks share: rows are an image and its class label."""

from __future__ import annotations

import pyarrow as pa
import torch

from dbparallel.config import Config
from dbparallel.data.images import IMAGE_COLUMN, LABEL_COLUMN, image_rows, images_on
from dbparallel.tasks.base import Batch, Decoding, Drawing, Rows


def decode_threads(cfg: Config) -> int:
    """Threads that decode a window's encoded images: data.decode_threads, or one per CPU the
    block reserves (runtime.cpus_per_block, at least 1)."""
    return cfg.data.decode_threads or max(1, int(cfg.runtime.cpus_per_block))


class ImageData(Decoding, Drawing):
    """Rows of (C, H, W) images with integer labels; the blocks take pixels in [-1, 1], or,
    with data.latents, latents less data.latent_shift, times data.latent_scale."""

    columns = [IMAGE_COLUMN, LABEL_COLUMN]
    cfg: Config

    def unpack(self, rows: pa.Table) -> Rows:
        return image_rows(rows, self.cfg.data, decode_threads(self.cfg))

    def to_device(self, rows: Rows, device: str | torch.device) -> Batch:
        return {"image": self.from_stored(images_on(rows[IMAGE_COLUMN], self.cfg.data, device)),
                "label": rows[LABEL_COLUMN].to(device, non_blocking=True)}

    def from_stored(self, images: torch.Tensor) -> torch.Tensor:
        """Images as stored (pixels in [0, 1], or latents) as the blocks take them, in place:
        pixels to [-1, 1]; latents less data.latent_shift, times data.latent_scale."""
        d = self.cfg.data
        if d.latents:
            return images.sub_(d.latent_shift).mul_(d.latent_scale)
        return images.mul_(2).sub_(1)

    def to_stored(self, y: torch.Tensor) -> torch.Tensor:
        """``from_stored`` undone, as a new tensor: pixels clamped to [-1, 1], then in [0, 1];
        latents divided by data.latent_scale, plus data.latent_shift (what the autoencoder
        decodes)."""
        d = self.cfg.data
        if d.latents:
            return y / d.latent_scale + d.latent_shift
        return (y.clamp(-1, 1) + 1) / 2

    def scored(self, stored: torch.Tensor) -> torch.Tensor:
        """What the in-domain classifier of the evaluation reads of images as stored: pixels
        in [0, 1] as they are; latents as the blocks take them, moved by 1/2 (y + 1) / 2, so
        that latents scaled to noise.sigma_data spread as pixels do."""
        if self.cfg.data.latents:
            return (self.from_stored(stored.clone()) + 1) / 2
        return stored

    def example_batch(self, n: int, device: str | torch.device) -> Batch:
        d = self.cfg.data
        return {"image": torch.zeros(n, d.channels, d.image_size, d.image_size, device=device),
                "label": torch.zeros(n, dtype=torch.long, device=device)}
