"""Images to classify, from a file, a folder or a Parquet table (``dbparallel predict``).

- a PNG/JPEG/... file: one image; a folder: every image file under it, in path order
  (hidden ones left out, as training leaves them out);
- a Parquet file or folder of Parquet files: its ``image`` column, raw (in the run's
  ``data.pixel_order``) or encoded, named ``<file> row <i>``.

Images are decoded as the training data was (data/images.py, data/encoded.py): grey or RGB
by ``data.channels``, and ``data.image_size`` square, else BadRows names every bad input (up
to ``errors.MAX_BAD_ROWS``), not only the first.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from dbparallel import errors
from dbparallel.config import DataConfig
from dbparallel.data.encoded import decode_encoded, trained_size_hint
from dbparallel.data.image_folder import IMAGE_EXTENSIONS, files_under
from dbparallel.data.images import IMAGE_COLUMN, image_encoding, in_order, shape_hint
from dbparallel.errors import BadRows, DataError, RowError

log = logging.getLogger(__name__)


def read_images(path: str | Path, data: DataConfig) -> tuple[list[str], torch.Tensor]:
    """(a name per image, pixels (N, C, H, W) uint8) of the images at ``path``."""
    root = Path(path)
    if not root.exists():
        raise DataError(f"{path}: no such file or folder")
    if root.is_file() and root.suffix.lower() == ".parquet":
        return _from_parquet([root], data)
    if root.is_file():
        files = [root]
    else:
        found = [Path(f) for f in files_under(str(root))]
        files = [p for p in found if p.suffix.lower() in IMAGE_EXTENSIONS]
        tables = [p for p in found if p.suffix.lower() == ".parquet"]
        if not files and tables:
            return _from_parquet(tables, data)
        if tables:  # two kinds of input in one folder: the images are what is classified
            log.warning("%s: %d Parquet file%s beside its images left out (%s); give %s "
                        "its own path to classify its rows", path, len(tables),
                        "s" * (len(tables) > 1), tables[0].name,
                        "it" if len(tables) == 1 else "each")
        if not files:
            raise DataError(f"{path}: no image files ({' '.join(IMAGE_EXTENSIONS)}) or "
                            f"Parquet tables in it")
    names = [str(f) for f in files]
    column = pa.array([f.read_bytes() for f in files], type=pa.binary())
    return names, _pixels(column, data, names)


def _from_parquet(files: list[Path], data: DataConfig) -> tuple[list[str], torch.Tensor]:
    names: list[str] = []
    pixels, bad = [], []
    for f in files:
        column = _image_column(f)
        rows = [f"{f} row {i}" for i in range(len(column))]
        names += rows
        try:
            pixels.append(_pixels(column, data, rows))
        except BadRows as err:  # the files after it may hold more
            bad += err.rows
            if len(bad) >= errors.MAX_BAD_ROWS:
                break
    if bad:
        raise BadRows(bad[:errors.MAX_BAD_ROWS], stopped=len(bad) >= errors.MAX_BAD_ROWS,
                      what="images")
    return names, torch.cat(pixels)


def _image_column(f: Path) -> pa.Array:
    """The ``image`` column of the Parquet file ``f``; DataError naming the file if it is not
    a readable table with a usable one."""
    try:
        schema = pq.read_schema(f)
        if IMAGE_COLUMN not in schema.names:
            raise DataError(f"{f}: column {IMAGE_COLUMN!r} is missing; the table has "
                            f"{schema.names}: rename the column that holds the images (pixels, "
                            f"or PNG/JPEG bytes) to {IMAGE_COLUMN!r}")
        try:
            image_encoding(schema.field(IMAGE_COLUMN).type)
        except DataError as err:
            raise DataError(f"{f}: {err}") from None
        return pq.read_table(f, columns=[IMAGE_COLUMN]).column(IMAGE_COLUMN).combine_chunks()
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{f}: not a readable Parquet table ({err})") from None


def _pixels(column: pa.Array, data: DataConfig, names: list[str]) -> torch.Tensor:
    """(N, C, H, W) uint8 of an image column; BadRows naming every bad image (up to
    errors.MAX_BAD_ROWS), not only the first."""
    c, s = data.channels, data.image_size
    out = np.empty((len(column), c * s * s), np.uint8)
    bad: list[str] = []
    start = 0  # the images after a bad one are decoded again
    while start < len(column):
        rest = column.slice(start)
        try:
            if image_encoding(column.type) == "encoded":
                out[start:] = decode_encoded(rest, data)
            else:
                out[start:] = in_order(_raw(rest, c * s * s), data)
            break
        except RowError as err:  # the network's data.resize is fixed: the images must fit it
            bad.append(f"{names[start + err.row]}: {trained_size_hint(err.detail, s)}")
            if len(bad) == errors.MAX_BAD_ROWS:
                break
            start += err.row + 1
    if bad:
        raise BadRows(bad, stopped=len(bad) == errors.MAX_BAD_ROWS, what="images")
    return torch.from_numpy(out).reshape(-1, c, s, s)


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
