"""``data encode``: images turned into an autoencoder's latents by the user's own encoder
(``--encoder module:function``), a batch at a time on a chosen device, for ``data.latents``
training (docs/vision.md, Latents). The images are decoded as training would decode them
(data.image_size, data.channels, data.resize), given to the encoder as floats in [0, 1],
(N, C, H, W), and what it returns, (N, C', H', W') floats, is stored as one flat list of
C'*H'*W' numbers per row (float16 by default), with the rows' labels. ``LatentStats`` keeps
the mean and spread of what was written, from which the command suggests
``data.latent_scale``."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from dbparallel.config import DataConfig
from dbparallel.data.images import IMAGE_COLUMN, image_rows, images_on
from dbparallel.errors import UserError

DTYPES = {"float16": (pa.float16(), np.float16), "float32": (pa.float32(), np.float32)}


@dataclass
class LatentStats:
    """Running sums of the latents written: their count, mean and standard deviation, and
    the shape (C', H', W') every row has."""

    shape: tuple[int, ...] | None = None
    count: int = 0
    total: float = 0.0
    squares: float = 0.0

    def add(self, latents: np.ndarray) -> None:
        values = latents.astype(np.float64)
        self.count += values.size
        self.total += float(values.sum())
        self.squares += float(np.square(values).sum())

    @classmethod
    def merged(cls, parts: list[LatentStats], setting: str) -> LatentStats:
        """The sums of ``parts`` (each of a part of the rows, encoded apart) together;
        UserError naming the encoder's ``setting`` where the parts' latents differ in
        shape."""
        shapes = {p.shape for p in parts if p.shape is not None}
        if len(shapes) > 1:
            raise UserError(f"{setting}: it returned latents of different shapes "
                            f"(C', H', W') in different parts of the data, "
                            f"{', '.join(map(str, sorted(shapes)))}; they must be all of one "
                            f"shape")
        return cls(next(iter(shapes), None), sum(p.count for p in parts),
                   sum(p.total for p in parts), sum(p.squares for p in parts))

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    @property
    def std(self) -> float:
        if not self.count:
            return 0.0
        return math.sqrt(max(self.squares / self.count - self.mean ** 2, 0.0))


class LatentEncoder:
    """The encoder ``function``, run ``batch`` images at a time on ``device`` under no_grad,
    its output checked and stored as ``dtype`` lists; ``stats`` of all it wrote. Its errors
    name it as ``setting`` says (``--encoder vae_codec:encode``)."""

    def __init__(self, function: Callable[[torch.Tensor], torch.Tensor], setting: str,
                 device: str = "cpu", batch: int = 64, dtype: str = "float16"):
        self.function, self.setting, self.device, self.batch = function, setting, device, batch
        self.arrow_type, self.numpy_type = DTYPES[dtype]
        self.stats = LatentStats()

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor, data: DataConfig) -> pa.Array:
        """A list column of the latents of ``pixels`` (N, C*H*W, as ``image_rows`` holds
        them: uint8, or floats in [0, 1]), one flat list per image: each batch becomes float
        images (N, C, H, W) in [0, 1] on the device only as it is encoded. UserError naming
        --encoder where it returns anything else, and naming --dtype where a latent does not
        fit float16."""
        out = []
        for start in range(0, len(pixels), self.batch):
            part = images_on(pixels[start:start + self.batch], data, self.device)
            latents = self._checked(self.function(part), part)
            stored = latents.astype(self.numpy_type)
            if not np.isfinite(stored).all():
                raise UserError(f"{self.setting}: a latent is beyond the range of "
                                f"{self.arrow_type} (up to {np.finfo(self.numpy_type).max:g}); "
                                f"store them as float32 (--dtype float32)")
            self.stats.add(stored)
            out.append(stored.reshape(len(stored), -1))
        flat = np.concatenate(out) if out else np.empty((0, 0), self.numpy_type)
        width = flat.shape[1] if flat.ndim == 2 else 0
        return pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1), self.arrow_type),
                                                 width).cast(pa.list_(self.arrow_type))

    def _checked(self, latents: object, images: torch.Tensor) -> np.ndarray:
        shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else None
        ok = (shape is not None and len(shape) == 4 and shape[0] == len(images)
              and latents.is_floating_point() and shape[2] == shape[3]
              and (self.stats.shape is None or shape[1:] == self.stats.shape))
        if not ok:
            got = f"a tensor of shape {shape}" if shape is not None else type(latents).__name__
            want = f" (C', H', W') = {self.stats.shape} as before" if self.stats.shape else ""
            raise UserError(f"{self.setting}: given images of shape "
                            f"{tuple(images.shape)}, it returned {got}; it must return float "
                            f"latents (N, C', H', W'), one per image, square (H' = W', as "
                            f"data.image_size is), all of one shape{want}")
        values = latents.detach().float().cpu().numpy()
        if not np.isfinite(values).all():
            raise UserError(f"{self.setting}: it returned NaN or infinite values")
        self.stats.shape = shape[1:]
        return values


@dataclass
class DecodeImages:
    """Every image decoded as training decodes it by ``data`` (the images' settings):
    ``check`` decodes (RowError at a bad row). What ``Encode`` checks, without an encoder:
    the rewrite of data encode's tasks that only name bad rows (runtime/rewrite_ray.py)."""

    data: DataConfig

    def check(self, rows: pa.Table) -> dict[str, torch.Tensor]:
        return image_rows(rows, self.data, self.data.decode_threads or os.cpu_count() or 1)

    def rewrite(self, rows: pa.Table, decoded: dict[str, torch.Tensor]) -> pa.Table:
        raise RuntimeError("DecodeImages only checks images; it writes nothing")


@dataclass
class Encode(DecodeImages):
    """``data encode``'s rewrite of ``reshard`` (data/reshard.py): every image decoded as
    training decodes it by ``data`` (the images' settings) and replaced by its latents from
    ``encoder``: ``check`` decodes (RowError at a bad row), ``rewrite`` encodes what it
    decoded."""

    encoder: LatentEncoder

    @property
    def stats(self) -> LatentStats:
        """The mean and spread of the latents written so far."""
        return self.encoder.stats

    def rewrite(self, rows: pa.Table, decoded: dict[str, torch.Tensor]) -> pa.Table:
        latents = self.encoder.encode(decoded[IMAGE_COLUMN], self.data)
        return rows.set_column(rows.schema.get_field_index(IMAGE_COLUMN), IMAGE_COLUMN,
                               latents)


def encode_rewrite(data: DataConfig, encoder: Callable[[torch.Tensor], torch.Tensor] | str,
                   setting: str, device: str, batch: int, dtype: str,
                   threads: int = 0) -> Encode:
    """``Encode`` by ``encoder``: a function, or the one a "module:function" names, imported
    here (a Ray task of ``data encode`` makes its own); decoding on ``threads`` threads (0:
    data.decode_threads); its errors name it as ``setting`` says."""
    from dbparallel.data.named_function import named_function

    if threads:
        data = dataclasses.replace(data, decode_threads=threads)
    function = named_function(encoder, setting) if isinstance(encoder, str) else encoder
    return Encode(data, LatentEncoder(function, setting, device, batch, dtype))


def decode_images(data: DataConfig, threads: int = 0) -> DecodeImages:
    """``DecodeImages`` by ``data``, decoding on ``threads`` threads (0:
    data.decode_threads)."""
    return DecodeImages(dataclasses.replace(data, decode_threads=threads) if threads else data)
