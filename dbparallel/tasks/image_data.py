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
    """Rows of (C, H, W) images with integer labels; the blocks take pixels in [-1, 1]."""

    columns = [IMAGE_COLUMN, LABEL_COLUMN]
    cfg: Config

    def unpack(self, rows: pa.Table) -> Rows:
        return image_rows(rows, self.cfg.data, decode_threads(self.cfg))

    def to_device(self, rows: Rows, device: str | torch.device) -> Batch:
        images = images_on(rows[IMAGE_COLUMN], self.cfg.data, device)
        return {"image": images.mul_(2).sub_(1),  # pixels to [-1, 1]
                "label": rows[LABEL_COLUMN].to(device, non_blocking=True)}

    def example_batch(self, n: int, device: str | torch.device) -> Batch:
        d = self.cfg.data
        return {"image": torch.zeros(n, d.channels, d.image_size, d.image_size, device=device),
                "label": torch.zeros(n, dtype=torch.long, device=device)}
