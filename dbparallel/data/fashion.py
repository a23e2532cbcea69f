"""Fashion-MNIST (60,000 train + 10,000 test 28x28 grey images, 10 classes, MIT licence).

The IDX files come from the Debian package ``dataset-fashion-mnist`` or from a directory at
``data.path``; they are converted once into one Parquet table in the cache (uint8 pixels,
``label``, ``split`` = train | test). ``data.path`` may also name that Parquet table itself.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dbparallel.data.cache import atomic_path, cache_dir
from dbparallel.data.row_groups import in_pieces
from dbparallel.data.splits import SPLIT_COLUMN
from dbparallel.data.tables import IMAGE_COLUMN, LABEL_COLUMN, not_found, read_table
from dbparallel.errors import DataError

PACKAGE_DIR = Path("/usr/share/datasets/fashion-mnist")  # where the Debian package puts it
INSTALL = "apt-get install dataset-fashion-mnist"
SIZE, CLASSES = 28, 10
NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
         "Bag", "Ankle boot")  # of labels 0..9, as the data set's authors name them
FILES = {  # split -> (images, labels), each as name or name.gz
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
VERSION = 1  # bump when the table layout changes (invalidates cached tables)
_UBYTE = 0x08  # IDX element type code of unsigned bytes
_read: dict[str, pa.Table] = {}  # converted tables already read by this process (immutable)


def read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes (optionally gzip-compressed) as an array of its shape."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise DataError(f"data.path: cannot read {path}: {err}") from None
    # header: two zero bytes, the element type, the number of dimensions, then each size (>u4)
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != _UBYTE or raw[3] == 0:
        raise DataError(f"data.path: {path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    shape = tuple(int(x) for x in np.frombuffer(raw, ">u4", ndim, offset=4))
    body = 4 + 4 * ndim
    if len(raw) - body != int(np.prod(shape)):
        raise DataError(f"data.path: {path} holds {len(raw) - body} values, its header says "
                        f"{'x'.join(map(str, shape))}")
    return np.frombuffer(raw, np.uint8, offset=body).reshape(shape)


def idx_files(directory: Path) -> dict[str, tuple[Path, Path]] | None:
    """The IDX files of both splits in ``directory``, or None if any is missing."""
    found: dict[str, tuple[Path, Path]] = {}
    for split, names in FILES.items():
        paths = []
        for name in names:
            candidates = [directory / f"{name}.gz", directory / name]
            hit = next((p for p in candidates if p.is_file()), None)
            if hit is None:
                return None
            paths.append(hit)
        found[split] = (paths[0], paths[1])
    return found


def idx_table(files: dict[str, tuple[Path, Path]]) -> pa.Table:
    """One table of both splits from their IDX files, validated."""
    images, labels, splits = [], [], []
    for split, (image_path, label_path) in files.items():
        x, y = read_idx(image_path), read_idx(label_path)
        if x.ndim != 3 or x.shape[1:] != (SIZE, SIZE):
            raise DataError(f"data.path: {image_path} holds images of shape {x.shape[1:]}, "
                            f"expected {SIZE}x{SIZE}")
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"data.path: {label_path} holds {y.shape} labels for "
                            f"{len(x)} images in {image_path}")
        if (y >= CLASSES).any():
            row = int(np.flatnonzero(y >= CLASSES)[0])
            raise DataError(f"data.path: {label_path} row {row} has label {y[row]}, outside "
                            f"[0, {CLASSES})")
        images.append(x.reshape(len(x), -1))
        labels.append(y.astype(np.int64))
        splits += [split] * len(x)
    flat = np.concatenate(images)
    return pa.table({
        IMAGE_COLUMN: pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), flat.shape[1]),
        LABEL_COLUMN: pa.array(np.concatenate(labels)),
        SPLIT_COLUMN: pa.array(splits, pa.string()),
    })


def cached_idx_parquet(files: dict[str, tuple[Path, Path]], shard_rows: int) -> str:
    """Path of ``idx_table`` of ``files`` as Parquet in the cache (row groups of
    ``shard_rows``), converted on first use."""
    content = hashlib.sha256(json.dumps([VERSION, shard_rows]).encode())
    for pair in files.values():  # by content: every machine's copy converts to the same file
        for p in pair:
            content.update(p.read_bytes())
    digest = content.hexdigest()[:16]
    path = cache_dir() / "fashion_mnist" / f"fashion_mnist_{digest}.parquet"
    if not path.is_file():
        tmp = atomic_path(path)
        pq.write_table(in_pieces(idx_table(files)), tmp, row_group_size=shard_rows)
        os.replace(tmp, path)
    return str(path)


def fashion_parquet(path: str = "", shard_rows: int = 4096) -> str:
    """Fashion-MNIST as a Parquet file or directory: converted from the IDX files at ``path``
    or of the Debian package, or ``path`` itself when it is Parquet."""
    if path:
        local = Path(path)
        if "://" not in path and local.is_dir() and (files := idx_files(local)) is not None:
            return cached_idx_parquet(files, shard_rows)
        if "://" not in path and not local.exists():
            raise not_found(path, " (expected the Fashion-MNIST IDX files or a Parquet table)")
        return path
    files = idx_files(PACKAGE_DIR)
    if files is None:
        raise DataError(
            f"data.source=fashion_mnist: the data set is not installed (no IDX files in "
            f"{PACKAGE_DIR}); get it with `{INSTALL}`, or set data.path= to a directory of the "
            f"IDX files ({', '.join(n for pair in FILES.values() for n in pair)}, optionally "
            f".gz) or to a Parquet table with columns image, label and split")
    return cached_idx_parquet(files, shard_rows)


def fashion_table(path: str = "") -> pa.Table:
    """The whole of Fashion-MNIST as one table (small tools and tests; runs stream it)."""
    return read_table(fashion_parquet(path))
