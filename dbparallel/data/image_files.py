"""Images to classify, from a file, a folder or a Parquet table (``dbparallel predict``).

- a PNG/JPEG/... file: one image; a folder: every image file under it, in path order
  (hidden ones left out, as training leaves them out);
- a Parquet file or folder of Parquet files: its ``image`` column, raw (in the run's
  ``data.pixel_order``) or encoded, named ``<file> row <i>``.

They are read a batch at a time (``read_batches``), so that a folder of any size is
classified in the memory of one batch. Images are decoded as the training data was
(data/images.py, data/encoded.py): grey or RGB by ``data.channels``, and ``data.image_size``
square; an image that is not is named with the reason, and the images after it are read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from dbparallel import errors
from dbparallel.config import DataConfig
from dbparallel.data.bad_rows import decode_past_bad_rows
from dbparallel.data.encoded import decode_encoded, trained_size_hint
from dbparallel.data.image_folder import IMAGE_EXTENSIONS, files_under
from dbparallel.data.images import (
    IMAGE_COLUMN,
    image_encoding,
    in_order,
    latent_rows,
    shape_hint,
)
from dbparallel.errors import BadRows, DataError, RowError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageInputs:
    """What a path holds to classify: image files, or else Parquet tables."""

    files: list[Path] = field(default_factory=list)
    tables: list[Path] = field(default_factory=list)

    def count(self) -> int:
        """How many images: the files, or the tables' rows (from their footers)."""
        if self.files:
            return len(self.files)
        return sum(_table(f).metadata.num_rows for f in self.tables)


@dataclass(frozen=True)
class ImageBatch:
    """The images of a batch that were read, and those that could not be."""

    names: list[str]  # of each image read
    pixels: torch.Tensor  # (len(names), C, H, W) uint8
    bad: list[str]  # "<name>: <why>" of each image that could not be read


def image_inputs(path: str | Path) -> ImageInputs:
    """The images at ``path``; DataError where there is nothing to classify."""
    root = Path(path)
    if not root.exists():
        raise DataError(f"{path}: no such file or folder")
    if root.is_file():
        if root.suffix.lower() == ".parquet":
            return ImageInputs(tables=[root])
        return ImageInputs(files=[root])
    found = [Path(f) for f in files_under(str(root))]
    files = [p for p in found if p.suffix.lower() in IMAGE_EXTENSIONS]
    tables = [p for p in found if p.suffix.lower() == ".parquet"]
    if not files and tables:
        return ImageInputs(tables=tables)
    if tables:  # two kinds of input in one folder: the images are what is classified
        log.warning("%s: %d Parquet file%s beside its images left out (%s); give %s its own "
                    "path to classify its rows", path, len(tables), "s" * (len(tables) > 1),
                    tables[0].name, "it" if len(tables) == 1 else "each")
    if not files:
        raise DataError(f"{path}: no image files ({' '.join(IMAGE_EXTENSIONS)}) or Parquet "
                        f"tables in it")
    return ImageInputs(files=files)


def read_batches(inputs: ImageInputs, data: DataConfig, batch: int) -> Iterator[ImageBatch]:
    """The images of ``inputs`` in order, ``batch`` at a time (a table's last batch may be
    shorter); a table that cannot be read at all is a DataError naming it."""
    if data.latents and inputs.files:
        raise DataError(f"{inputs.files[0]}: an image file, and this network reads latents "
                        f"(data.latents=true): give a Parquet table whose {IMAGE_COLUMN!r} "
                        f"column holds them, encoded by the network's autoencoder")
    for start in range(0, len(inputs.files), batch):
        read, unread = [], []
        for f in inputs.files[start:start + batch]:
            try:
                read.append((str(f), f.read_bytes()))
            except OSError as err:  # gone since it was listed, or not readable
                unread.append(f"{f}: cannot be read ({err.strerror or err})")
        # large_binary: a batch of large photos may hold over 2 GiB (data/shard_reader.py)
        part = _decoded(pa.array([b for _, b in read], type=pa.large_binary()), data,
                        [name for name, _ in read])
        yield ImageBatch(part.names, part.pixels, unread + part.bad)
    for f in inputs.tables:
        _check_column(f, data)
        row = 0
        try:
            for part in _table(f).iter_batches(batch_size=batch, columns=[IMAGE_COLUMN]):
                column = part.column(IMAGE_COLUMN)
                yield _decoded(column, data, [f"{f} row {row + i}" for i in range(len(column))])
                row += len(column)
        except (pa.ArrowException, OSError) as err:
            raise DataError(f"{f}: not a readable Parquet table ({err})") from None


def read_images(path: str | Path, data: DataConfig) -> tuple[list[str], torch.Tensor]:
    """(a name per image, pixels (N, C, H, W) uint8) of every image at ``path``, at once;
    BadRows naming the bad ones (up to errors.MAX_BAD_ROWS) if any is."""
    names, pixels, bad = [], [], []
    for part in read_batches(image_inputs(path), data, 1024):
        names += part.names
        pixels.append(part.pixels)
        bad += part.bad
    if bad:
        raise BadRows(bad[:errors.MAX_BAD_ROWS], stopped=len(bad) > errors.MAX_BAD_ROWS,
                      what="images")
    return names, torch.cat(pixels)


def _table(f: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(f)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{f}: not a readable Parquet table ({err})") from None


def _check_column(f: Path, data: DataConfig) -> None:
    """DataError naming the Parquet file ``f`` unless it has a usable ``image`` column (of
    floats for a network of latents)."""
    schema = _table(f).schema_arrow
    if IMAGE_COLUMN not in schema.names:
        raise DataError(f"{f}: column {IMAGE_COLUMN!r} is missing; the table has "
                        f"{schema.names}: rename the column that holds the images (pixels, "
                        f"or PNG/JPEG bytes) to {IMAGE_COLUMN!r}")
    try:
        image_encoding(schema.field(IMAGE_COLUMN).type)
        if data.latents:
            latent_rows(pa.array([], schema.field(IMAGE_COLUMN).type), data)
    except DataError as err:
        raise DataError(f"{f}: {err}") from None


def _decoded(column: pa.Array | pa.ChunkedArray, data: DataConfig,
             names: list[str]) -> ImageBatch:
    """The images of ``column`` (one name each) decoded; a bad one is set aside, named with
    its reason (the network's data.resize is fixed: an image must fit it), and the others
    decoded (``decode_past_bad_rows``)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    c, s = data.channels, data.image_size
    encoded = image_encoding(column.type) == "encoded"

    def decode(start: int, stop: int) -> np.ndarray:
        part = column.slice(start, stop - start)
        if data.latents:
            return latent_rows(part, data).numpy()
        return decode_encoded(part, data) if encoded else in_order(_raw(part, c * s * s), data)

    parts, found = decode_past_bad_rows(decode, len(column), len(column))
    bad = [f"{names[row]}: {trained_size_hint(err.detail, s, '--resize')}" for row, err in found]
    kept = [name for start, stop, _ in parts for name in names[start:stop]]
    pixels = np.concatenate([p for _, _, p in parts]) if parts else np.empty((0, c * s * s),
                                                                              np.uint8)
    return ImageBatch(kept, torch.from_numpy(pixels).reshape(-1, c, s, s), bad)


def _raw(column: pa.Array, size: int) -> np.ndarray:
    """Raw pixel lists as uint8 (integers 0..255, or floats in [0, 1])."""
    values = column.to_pylist()
    out = np.empty((len(values), size), dtype=np.uint8)
    for row, v in enumerate(values):
        if v is None or len(v) != size:
            got = "null" if v is None else f"{len(v)} values"
            hint = "" if v is None else shape_hint(len(v))
            raise RowError(row, IMAGE_COLUMN, f"has {got}, expected {size} "
                                              f"(data.channels x data.image_size^2{hint})")
        a = np.asarray(v, dtype=np.float64)
        if pa.types.is_floating(column.type.value_type):
            a = a * 255.0
        if not np.isfinite(a).all() or a.min() < 0 or a.max() > 255:
            raise RowError(row, IMAGE_COLUMN, "has pixel values outside [0, 255] "
                                              "(integers) or [0, 1] (floats)")
        out[row] = np.round(a).astype(np.uint8)
    return out
