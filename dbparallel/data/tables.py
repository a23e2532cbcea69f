"""Arrow/Parquet tables of images and labels: reading, writing and validation.

An image table has a column ``image`` (list of C*H*W floats in [0, 1] in (C, H, W) order, or
uint8 in [0, 255]) and a column ``label`` (integers in [0, num_classes)). Paths may be local
or object-store URIs (anything ``pyarrow.fs`` resolves).
"""

from __future__ import annotations

import codecs
import os

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import torch

from dbparallel.config import DataConfig
from dbparallel.data.row_groups import in_pieces
from dbparallel.errors import DataError, OtherData

IMAGE_COLUMN = "image"
LABEL_COLUMN = "label"


def resolve_path(path: str) -> tuple[pafs.FileSystem, str]:
    """Filesystem and path for a local path or URI; DataError if it cannot be reached."""
    try:
        if "://" in path:
            return pafs.FileSystem.from_uri(path)
        return pafs.LocalFileSystem(), os.path.expanduser(str(path))
    except (pa.ArrowException, OSError, ValueError) as err:
        raise DataError(f"data.path: cannot reach {path!r}: {err}") from None


def not_found(path: str, more: str = "") -> DataError:
    """data.path's error for a path where nothing is; a local path with a space at an end is
    told so where the path without it is there (a space copied with the path)."""
    hint = more
    trimmed = path.strip()
    if trimmed != path and "://" not in path and os.path.exists(os.path.expanduser(trimmed)):
        hint = f" (it has a space at {'its start' if path[:1].isspace() else 'its end'}: " \
               f"{trimmed!r} is there)"
    return DataError(f"data.path: no such file or directory: {path!r}{hint}")


def not_parquet(path: str, err: Exception) -> DataError:
    """data.path's error for a file Arrow cannot read as Parquet; a local file that starts
    as text is told how a text file is recognised (by its name), one named as text that it is
    read as text with data.source=text, an image file what an image data set is."""
    from dbparallel.data.file_names import text_file_name
    from dbparallel.data.images import IMAGE_EXTENSIONS

    name = path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    if name.lower().endswith(IMAGE_EXTENSIONS):
        found = f"{path!r} is an image, not a data set"
        return OtherData(f"data.path: {found}: images train from a folder of class folders "
                         f"(data.source=image_folder, data.path at the folder above the class "
                         f"folders)", found)
    if text_file_name(name):  # named as text, read as Parquet: data.source says so
        return OtherData(f"data.path: {path!r} is not readable Parquet: {err} (its name says "
                         f"it is text: give data.source=text to read it as a text corpus)",
                         f"{path!r} is named as text, not Parquet")
    try:
        if "://" in path or not os.path.isfile(path):  # an object store's: not read again
            raise OSError(path)
        with open(path, "rb") as f:
            head = f.read(4096)
        # incremental: the 4096 bytes may end inside a character
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        if head and b"\0" not in head:
            return OtherData(f"data.path: {path!r} is not readable Parquet: {err} (it looks "
                             f"like text: text files are recognised by their names, ending in "
                             f".txt, or .jsonl, .ndjson or .json for one JSON object per line, "
                             f"compressed or not; rename it)",
                             f"{path!r} is not readable Parquet and looks like text")
    except (OSError, UnicodeDecodeError):
        pass
    return DataError(f"data.path: {path!r} is not readable Parquet: {err}")


def read_table(path: str) -> pa.Table:
    """Read a Parquet file or directory of Parquet files."""
    fs, where = resolve_path(path)
    try:
        info = fs.get_file_info(where)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"data.path: cannot reach {path!r}: {err}") from None
    if info.type == pafs.FileType.NotFound:
        raise not_found(path)
    try:
        return pq.read_table(where, filesystem=fs)
    except (pa.ArrowException, OSError) as err:
        raise not_parquet(path, err) from None


def write_table(table: pa.Table, path: str) -> None:
    """Write ``table`` as one Parquet file."""
    fs, where = resolve_path(path)
    parent = where.rsplit("/", 1)[0]
    if parent and parent != where:
        fs.create_dir(parent, recursive=True)
    pq.write_table(in_pieces(table), where, filesystem=fs)


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
