"""Image batches: the ``image`` and ``label`` columns of some rows as tensors on a device.

The ``image`` column holds either raw pixels, a list of C*H*W numbers per row in (C, H, W)
order (floats in [0, 1], or integers in [0, 255]), or encoded images (PNG/JPEG bytes: a binary
column, or a struct with a ``bytes`` field as Hugging Face datasets write it; data/encoded.py).
Decoding happens per batch: pixels travel as uint8 where they are stored so, and become
floats on the block's own device.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from dbparallel.config import DataConfig
from dbparallel.errors import DataError, RowError

IMAGE_COLUMN = "image"
LABEL_COLUMN = "label"


def image_encoding(kind: pa.DataType) -> str:
    """``raw`` or ``encoded`` for an image column of type ``kind``; DataError otherwise."""
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return "encoded"
    if pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0:
        return "encoded"
    if pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind) or pa.types.is_large_list(kind):
        values = kind.value_type
        if pa.types.is_floating(values) or pa.types.is_integer(values):
            return "raw"
        raise DataError(f"column {IMAGE_COLUMN!r}: values must be numbers, got {values}")
    raise DataError(f"column {IMAGE_COLUMN!r}: expected a list of numbers per row or encoded "
                    f"image bytes (binary, or a struct with a 'bytes' field), got {kind}")


def check_schema(schema: pa.Schema) -> None:
    """The columns an image table needs, with usable types; DataError naming the column."""
    for column in (IMAGE_COLUMN, LABEL_COLUMN):
        if column not in schema.names:
            raise DataError(f"column {column!r} is missing; the table has {schema.names}")
    image_encoding(schema.field(IMAGE_COLUMN).type)
    if not pa.types.is_integer(schema.field(LABEL_COLUMN).type):
        raise DataError(f"column {LABEL_COLUMN!r}: expected integers, "
                        f"got {schema.field(LABEL_COLUMN).type}")


def image_batch(table: pa.Table, data: DataConfig,
                device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, C, H, W) float32 in [0, 1], labels (N,) int64) on ``device``; RowError
    names the first bad row of the batch."""
    check_schema(table.schema)
    if table.num_rows == 0:
        raise DataError("the data set is empty (0 rows)")
    c, s = data.channels, data.image_size
    column = table.column(IMAGE_COLUMN).combine_chunks()
    if image_encoding(column.type) == "encoded":
        from dbparallel.data.encoded import decode_encoded

        pixels = torch.from_numpy(decode_encoded(column, data))  # (N, C*H*W) uint8
        images = pixels.to(device, non_blocking=True).float() / 255.0
    else:
        images = _raw_pixels(column, c * s * s, device)
    labels = label_batch(table.column(LABEL_COLUMN).combine_chunks(), data.num_classes, device)
    return images.reshape(-1, c, s, s), labels


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _raw_pixels(column: pa.Array, size: int, device: str | torch.device) -> torch.Tensor:
    if column.null_count:
        raise RowError(_first(column.is_null().to_numpy(False)), IMAGE_COLUMN, "is null")
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    if (lengths != size).any():
        row = _first(lengths != size)
        raise RowError(row, IMAGE_COLUMN, f"has {lengths[row]} values, expected {size} "
                                          f"(data.channels x data.image_size^2)")
    values = pc.list_flatten(column)
    kind = values.type
    # writable: Arrow's buffers are read-only and torch wants to own what it wraps
    flat = np.require(values.to_numpy(zero_copy_only=False).reshape(-1, size), requirements="W")
    if pa.types.is_uint8(kind):  # the compact form: 8-bit pixels become floats on the device
        return torch.from_numpy(flat).to(device, non_blocking=True).float() / 255.0
    pixels = torch.from_numpy(flat.astype(np.float32)).to(device, non_blocking=True)
    if pa.types.is_integer(kind):
        pixels = pixels / 255.0
    bad = (~torch.isfinite(pixels).all(1) | (pixels < 0).any(1) | (pixels > 1).any(1)).cpu()
    if bad.any():
        limit = "[0, 255] for integers" if pa.types.is_integer(kind) else "[0, 1] for floats"
        raise RowError(_first(bad.numpy()), IMAGE_COLUMN, f"has values outside {limit}")
    return pixels


def label_batch(column: pa.Array, num_classes: int,
                device: str | torch.device = "cpu") -> torch.Tensor:
    """Labels (N,) int64 in [0, num_classes) on ``device``."""
    if not pa.types.is_integer(column.type):
        raise DataError(f"column {LABEL_COLUMN!r}: expected integers, got {column.type}")
    if column.null_count:
        raise RowError(_first(column.is_null().to_numpy(False)), LABEL_COLUMN, "is null")
    labels = column.to_numpy(zero_copy_only=False).astype(np.int64)
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        row = _first(bad)
        raise RowError(row, LABEL_COLUMN, f"has label {labels[row]}, outside [0, {num_classes}) "
                                          f"(data.num_classes={num_classes})")
    return torch.from_numpy(labels).to(device, non_blocking=True)
