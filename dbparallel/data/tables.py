"""Arrow/Parquet tables of images and labels: reading, writing and validation.

A Parquet row group is read about a MiB of rows at a time (``row_group_batches``): decoded
whole, a row group costs several times its size at once (256 MiB of uint8 image lists: Arrow
peaked at 2,593 MiB read whole, 10 MiB in pieces; benchmarks/parquet_read.py).

An image table has a column ``image`` (list of C*H*W floats in [0, 1] in (C, H, W) order, or
uint8 in [0, 255]) and a column ``label`` (integers in [0, num_classes)). Paths may be local
or object-store URIs (anything ``pyarrow.fs`` resolves).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import torch

from dbparallel.config import DataConfig
from dbparallel.errors import DataError

IMAGE_COLUMN = "image"
LABEL_COLUMN = "label"
PIECE_BYTES = 1 << 20  # uncompressed bytes of a row group's columns decoded at a time
READ_BUFFER = 8 << 20  # bytes of a file read at a time (one request to an object store)


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


def row_group_batches(f: pa.NativeFile, row_group: int,
                      columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """Row group ``row_group`` of the open Parquet file ``f`` (only ``columns``, when given),
    in batches of about ``PIECE_BYTES`` of uncompressed data, read as they are decoded."""
    pf = pq.ParquetFile(f, buffer_size=READ_BUFFER, pre_buffer=False)
    group = pf.metadata.row_group(row_group)
    size = sum(group.column(i).total_uncompressed_size for i in range(group.num_columns)
               if columns is None or group.column(i).path_in_schema.split(".")[0] in columns)
    rows = max(1, PIECE_BYTES * group.num_rows // max(size, 1))
    yield from pf.iter_batches(batch_size=rows, row_groups=[row_group], columns=columns)


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
    """Validated (images (N, C, H, W) float32 in [0, 1], labels (N,) int64) of a small table,
    on the CPU (tools and tests; training unpacks a window at a time, data/images.py)."""
    from dbparallel.data.images import image_batch

    return image_batch(table, data, "cpu")
