"""Image rows: the ``image`` and ``label`` columns of some rows as tensors.

The ``image`` column holds either raw pixels, a list of C*H*W numbers per row in (C, H, W)
order, or (H, W, C) order with ``data.pixel_order=hwc`` (floats in [0, 1], or integers in
[0, 255]; data/pixel_order.py), or encoded images (PNG/JPEG bytes: a binary
column, or a struct with a ``bytes`` field as Hugging Face datasets write it; data/encoded.py),
or, with ``data.latents=true``, an autoencoder's latents: float lists of any finite values.
Rows are checked and unpacked on the CPU (``image_rows``: a training stream does it once per
window of the data, in its reading thread); a batch's pixels travel as uint8 where they are
stored so, and become floats on the block's own device (``images_on``).
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from dbparallel.config import DataConfig
from dbparallel.data.pixel_order import to_chw
from dbparallel.errors import DataError, RowError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")  # image folders read these
OTHER_IMAGE_EXTENSIONS = (".tif", ".tiff", ".heic", ".heif", ".avif", ".ico", ".jp2",  # not these
                          ".jfif", ".jpe", ".apng", ".jxl", ".ppm", ".pgm", ".pbm", ".tga",
                          ".psd", ".dng")  # (a .jfif or .jpe is a JPEG: renamed, it is read)

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
        nested = pa.types.is_list(values) or pa.types.is_fixed_size_list(values)
        flat = (": each row is one flat list of C*H*W numbers in (C, H, W) order (numpy's "
                "reshape(-1)), or in (H, W, C) order with data.pixel_order=hwc" if nested
                else "")
        raise DataError(f"column {IMAGE_COLUMN!r}: values must be numbers, got {values}{flat}")
    raise DataError(f"column {IMAGE_COLUMN!r}: expected a list of numbers per row or encoded "
                    f"image bytes (binary, or a struct with a 'bytes' field), got {kind}")


WHAT_IS_READ = (f"image tasks read the images from a column named {IMAGE_COLUMN!r} (pixels, "
                f"or PNG/JPEG bytes) and their classes from an integer column named "
                f"{LABEL_COLUMN!r}")


def check_schema(schema: pa.Schema) -> None:
    """The columns an image table needs, with usable types; DataError naming the column, and
    what to do where a user's own table names or types it otherwise."""
    for column in (IMAGE_COLUMN, LABEL_COLUMN):
        if column not in schema.names:
            raise DataError(f"column {column!r} is missing; the table has {schema.names}: "
                            f"{WHAT_IS_READ}; rename the columns that hold them")
    image_encoding(schema.field(IMAGE_COLUMN).type)
    kind = schema.field(LABEL_COLUMN).type
    if not pa.types.is_integer(kind):
        names = pa.types.is_string(kind) or pa.types.is_large_string(kind) \
            or pa.types.is_dictionary(kind)
        fix = ("map the class names to ids, or lay the images out as an image folder "
               "(data.source=image_folder), whose class folders' names are kept" if names
               else "cast the column to an integer type" + (
                   " (pandas makes integers with a missing value floats: drop or fill the "
                   "rows without a label first)" if pa.types.is_floating(kind) else ""))
        raise DataError(f"column {LABEL_COLUMN!r}: expected integers, the class ids 0 .. "
                        f"data.num_classes-1, got {kind}: {fix}")


def image_rows(table: pa.Table, data: DataConfig, threads: int = 1) -> dict[str, torch.Tensor]:
    """Every row of ``table`` checked and held compactly on the CPU: ``image`` (N, C*H*W)
    uint8 pixels (float32 in [0, 1] where the table stores floats) and ``label`` (N,) int64.
    Encoded images are decoded here, by ``threads`` threads. RowError names the first bad
    row."""
    check_schema(table.schema)
    if table.num_rows == 0:
        raise DataError("the data set is empty (0 rows)")
    column = table.column(IMAGE_COLUMN).combine_chunks()
    if data.latents:
        pixels = latent_rows(column, data)
    elif image_encoding(column.type) == "encoded":
        from dbparallel.data.encoded import decode_encoded

        pixels = torch.from_numpy(decode_encoded(column, data, threads))
    else:
        pixels = _raw_pixels(column, data)
    labels = label_rows(table.column(LABEL_COLUMN).combine_chunks(), data.num_classes)
    return {IMAGE_COLUMN: pixels, LABEL_COLUMN: labels}


def images_on(pixels: torch.Tensor, data: DataConfig,
              device: str | torch.device = "cpu") -> torch.Tensor:
    """Pixels from ``image_rows`` as new float32 images (N, C, H, W) in [0, 1] on ``device``
    (8-bit pixels travel as bytes and become floats there; latents as they are stored); the
    caller may change them in place."""
    if pixels.dtype == torch.uint8:
        images = pixels.to(device, non_blocking=True).float().div_(255.0)
    else:
        images = pixels.to(device, torch.float32, non_blocking=True, copy=True)
    return images.reshape(-1, data.channels, data.image_size, data.image_size)


def image_batch(table: pa.Table, data: DataConfig,
                device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, C, H, W) float32 in [0, 1], labels (N,) int64) of ``table`` on ``device``;
    RowError names the first bad row."""
    rows = image_rows(table, data)
    return (images_on(rows[IMAGE_COLUMN], data, device),
            rows[LABEL_COLUMN].to(device, non_blocking=True))


def shape_hint(values: int) -> str:
    """The square images a row of ``values`` pixels could be, C x H x W, of 3, 1 or 4 (RGBA)
    channels: "; 192 is 3 x 8 x 8", "; 1024 is 1 x 32 x 32 or 4 x 16 x 16" (empty where it is
    none of them). A raw list of 4 channels is read with data.channels=4."""
    shapes = [f"{c} x {side} x {side}" for c in (3, 1, 4)
              if values and values == c * (side := math.isqrt(values // c)) ** 2]
    return f"; {values} is {' or '.join(shapes)}" if shapes else ""


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def in_order(flat: np.ndarray, data: DataConfig) -> np.ndarray:
    """(N, C*H*W) raw pixel rows in (C, H, W) order: ``flat`` itself, or, with
    data.pixel_order=hwc and more than one channel, transposed from (H, W, C)."""
    if data.pixel_order == "chw" or data.channels == 1:
        return flat
    return to_chw(flat, data.channels, data.image_size)


def _checked_lists(column: pa.Array, data: DataConfig) -> tuple[np.ndarray, pa.DataType]:
    """(N, C*H*W) numbers of a list column and their Arrow type; RowError naming the first
    null row or row of another length."""
    size = data.channels * data.image_size ** 2
    if column.null_count:
        raise RowError(_first(column.is_null().to_numpy(False)), IMAGE_COLUMN, "is null")
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    if (lengths != size).any():
        row = _first(lengths != size)
        raise RowError(row, IMAGE_COLUMN, f"has {lengths[row]} values, expected {size} "
                                          f"(data.channels x data.image_size^2"
                                          f"{shape_hint(int(lengths[row]))})")
    values = pc.list_flatten(column)
    return values.to_numpy(zero_copy_only=False).reshape(-1, size), values.type


def latent_rows(column: pa.Array, data: DataConfig) -> torch.Tensor:
    """(N, C*H*W) latents in (C, H, W) order (``in_order``), float16 where stored so, else
    float32; DataError naming data.latents for a column of pixels (integers, encoded images),
    RowError naming the first row with a NaN, infinite or null value."""
    if image_encoding(column.type) == "encoded" or pa.types.is_integer(column.type.value_type):
        what = ("encoded images" if image_encoding(column.type) == "encoded"
                else f"integers ({column.type.value_type})")
        raise DataError(f"column {IMAGE_COLUMN!r} holds {what}, pixels, and data.latents=true "
                        f"reads an autoencoder's latents as float lists: write the latents as "
                        f"float32 or float16 (pixels are read with data.latents=false)")
    flat, kind = _checked_lists(column, data)
    latents = flat if pa.types.is_float16(kind) else flat.astype(np.float32)
    bad = ~np.isfinite(latents).all(1)  # nulls: NaN
    if bad.any():
        raise RowError(_first(bad), IMAGE_COLUMN, "has NaN, infinite or null values")
    return torch.from_numpy(np.require(in_order(latents, data), requirements="W"))


def _raw_pixels(column: pa.Array, data: DataConfig) -> torch.Tensor:
    """(N, C*H*W) pixels in (C, H, W) order (``in_order``): uint8 for integers (checked to
    lie in [0, 255]), float32 for floats (checked to lie in [0, 1])."""
    flat, kind = _checked_lists(column, data)
    if pa.types.is_uint8(kind) and flat.dtype == np.uint8:  # the compact form (no nulls), kept
        # writable: Arrow's buffers are read-only and torch wants to own what it wraps
        return torch.from_numpy(np.require(in_order(flat, data), requirements="W"))
    if pa.types.is_integer(kind):
        bad = ~np.isfinite(flat).all(1) | (flat < 0).any(1) | (flat > 255).any(1)  # nulls: NaN
        if bad.any():
            raise RowError(_first(bad), IMAGE_COLUMN, "has values outside [0, 255] for integers")
        return torch.from_numpy(in_order(flat.astype(np.uint8), data))
    pixels = flat.astype(np.float32)
    bad = ~np.isfinite(pixels).all(1) | (pixels < 0).any(1) | (pixels > 1).any(1)
    if bad.any():
        row = pixels[_first(bad)]
        if not np.isfinite(row).all():
            why = "has NaN or null values"
        elif row.min() >= 0 and row.max() <= 255:
            why = (f"has values outside [0, 1] for floats (up to {row.max():g}: pixels of "
                   f"0..255 stored as floats? write them as uint8, or divided by 255)")
        else:
            why = (f"has values outside [0, 1] for floats ({row.min():.3g} to "
                   f"{row.max():.3g}: an autoencoder's latents? set data.latents=true)")
        raise RowError(_first(bad), IMAGE_COLUMN, why)
    return torch.from_numpy(in_order(pixels, data))


def label_rows(column: pa.Array, num_classes: int) -> torch.Tensor:
    """Labels (N,) int64 in [0, num_classes), on the CPU."""
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
    return torch.from_numpy(labels)
