"""Arrow/Parquet tables of images and labels: reading, writing and validation.

An image table has a column ``image`` (list of C*H*W floats in [0, 1] in (C, H, W) order, or
uint8 in [0, 255]) and a column ``label`` (integers in [0, num_classes)). Paths may be local
or object-store URIs (anything ``pyarrow.fs`` resolves).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import torch

from dbparallel.config import DataConfig
from dbparallel.errors import DataError

IMAGE_COLUMN = "image"
LABEL_COLUMN = "label"


def resolve_path(path: str) -> tuple[pafs.FileSystem, str]:
    """Filesystem and path for a local path or URI; DataError if it cannot be reached."""
    try:
        if "://" in path:
            return pafs.FileSystem.from_uri(path)
        return pafs.LocalFileSystem(), str(path)
    except (pa.ArrowException, OSError, ValueError) as err:
        raise DataError(f"data.path: cannot reach {path!r}: {err}") from None


def read_table(path: str) -> pa.Table:
    """Read a Parquet file or directory of Parquet files."""
    fs, where = resolve_path(path)
    try:
        info = fs.get_file_info(where)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"data.path: cannot reach {path!r}: {err}") from None
    if info.type == pafs.FileType.NotFound:
        raise DataError(f"data.path: no such file or directory: {path!r}")
    try:
        return pq.read_table(where, filesystem=fs)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"data.path: {path!r} is not readable Parquet: {err}") from None


def write_table(table: pa.Table, path: str) -> None:
    """Write ``table`` as one Parquet file."""
    fs, where = resolve_path(path)
    parent = where.rsplit("/", 1)[0]
    if parent and parent != where:
        fs.create_dir(parent, recursive=True)
    pq.write_table(table, where, filesystem=fs)


def image_table(images: np.ndarray, labels: np.ndarray) -> pa.Table:
    """Table from images (N, C, H, W) in [0, 1] and integer labels (N,)."""
    flat = images.reshape(len(images), int(np.prod(images.shape[1:]))).astype(np.float32)
    return pa.table({
        IMAGE_COLUMN: pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), flat.shape[1]),
        LABEL_COLUMN: pa.array(labels.astype(np.int64)),
    })


def image_tensors(table: pa.Table, data: DataConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Validated (images (N, C, H, W) float32 in [0, 1], labels (N,) int64) from a table."""
    for column in (IMAGE_COLUMN, LABEL_COLUMN):
        if column not in table.column_names:
            raise DataError(f"column {column!r} is missing; the table has {table.column_names}")
    if table.num_rows == 0:
        raise DataError("the data set is empty (0 rows)")
    c, s = data.channels, data.image_size
    images = _image_array(table.column(IMAGE_COLUMN).combine_chunks(), c * s * s)
    labels = _label_array(table.column(LABEL_COLUMN).combine_chunks(), data.num_classes)
    return torch.from_numpy(images.reshape(-1, c, s, s)), torch.from_numpy(labels)


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _image_array(column: pa.Array, size: int) -> np.ndarray:
    if not pa.types.is_list(column.type) and not pa.types.is_fixed_size_list(column.type) \
            and not pa.types.is_large_list(column.type):
        raise DataError(f"column 'image': expected a list of numbers per row, got {column.type}")
    if column.null_count:
        raise DataError(f"column 'image': row {_first(column.is_null().to_numpy(False))} is null")
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    if (lengths != size).any():
        row = _first(lengths != size)
        raise DataError(f"column 'image': row {row} has {lengths[row]} values, expected {size} "
                        f"(data.channels x data.image_size^2)")
    values = pc.list_flatten(column)
    kind = values.type
    if not (pa.types.is_floating(kind) or pa.types.is_integer(kind)):
        raise DataError(f"column 'image': values must be numbers, got {kind}")
    flat = values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, size)
    if pa.types.is_integer(kind):
        flat = flat / 255.0
    bad = ~np.isfinite(flat).all(1) | (flat < 0).any(1) | (flat > 1).any(1)
    if bad.any():
        limit = "[0, 255] for integers" if pa.types.is_integer(kind) else "[0, 1] for floats"
        raise DataError(f"column 'image': row {_first(bad)} has values outside {limit}")
    return flat


def _label_array(column: pa.Array, num_classes: int) -> np.ndarray:
    if not pa.types.is_integer(column.type):
        raise DataError(f"column 'label': expected integers, got {column.type}")
    if column.null_count:
        raise DataError(f"column 'label': row {_first(column.is_null().to_numpy(False))} is null")
    labels = column.to_numpy(zero_copy_only=False).astype(np.int64)
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        row = _first(bad)
        raise DataError(f"column 'label': row {row} has label {labels[row]}, outside "
                        f"[0, {num_classes}) (data.num_classes={num_classes})")
    return labels
