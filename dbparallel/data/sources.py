"""Every data source as a DataIndex: built-in sets, the user's Parquet, image folders, text.

There is one data path: the built-in sets (digits, Fashion-MNIST, Shakespeare) are written
once into the cache as Parquet or token shards and then indexed and streamed exactly like a
user's own data.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dbparallel.config import TEXT_TASKS, DataConfig
from dbparallel.data.cache import atomic_path, cache_dir
from dbparallel.data.document_errors import missing_text
from dbparallel.data.images import IMAGE_COLUMN, LABEL_COLUMN
from dbparallel.data.row_groups import in_pieces
from dbparallel.data.shard_reader import SPLIT_COLUMN
from dbparallel.data.shards import DataIndex
from dbparallel.data.split_reader import iter_split
from dbparallel.data.tables import image_table, not_parquet
from dbparallel.errors import DataError, OtherData

DIGITS_VERSION = 1  # bump when the cached digits table changes


def digits_table() -> pa.Table:
    """scikit-learn's 1,797 8x8 handwritten digits (shipped inside scikit-learn), in [0, 1]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.reshape(-1, 1, 8, 8) / 16.0
    return image_table(images, digits.target)


def digits_parquet(shard_rows: int) -> str:
    """The digits as a Parquet file in the cache (row groups of ``shard_rows``)."""
    path = cache_dir() / "digits" / f"digits_r{shard_rows}_v{DIGITS_VERSION}.parquet"
    if not path.is_file():
        tmp = atomic_path(path)
        pq.write_table(in_pieces(digits_table()), tmp, row_group_size=shard_rows)
        os.replace(tmp, path)
    return str(path)


def _first_schema(path: str) -> tuple[str, pa.Schema, str]:
    """(the first Parquet file under ``path``, its schema, ``path`` where it is a folder of
    files, else ""): from its footer."""
    from dbparallel.data.parquet_index import parquet_files

    fs, where, files = parquet_files(path)
    try:
        with fs.open_input_file(files[0].path) as f:
            schema = pq.ParquetFile(f).schema_arrow
    except (pa.ArrowException, OSError) as err:
        raise not_parquet(files[0].path, err) from None
    return files[0].path, schema, path if files[0].path != where else ""


def _cached(index: DataIndex) -> DataIndex:
    """``index`` marked as built into this machine's cache: a process on a machine that
    does not see these files builds them again (training/data_pin.py run_data). The cached
    file's name holds its content's key, so its times and place do not identify it."""
    meta = {k: v for k, v in index.meta.items() if k != "stat"}
    return DataIndex(index.kind, index.source, index.splits, {**meta, "cached": True})


def check_kind(task: str, data: DataConfig, index: DataIndex | None = None) -> None:
    """A DataError naming ``task`` when the data hold the other kind (text for an image task,
    images for a text task): before anything is read, from ``data.source`` (and for Parquet,
    from its first file's columns: a table with a column named by ``data.text_field``, which
    open_data tokenizes, is named as text for an image task, one with neither it nor an
    ``image`` column as no text for a text task, before either is indexed); from ``index``
    for Parquet."""
    wants = "tokens" if task in TEXT_TASKS else "images"
    text = ", ".join(TEXT_TASKS[:-1]) + f" or {TEXT_TASKS[-1]}"
    field = data.text_field
    if wants == "images" and data.source in ("shakespeare", "text"):
        raise DataError(f"task={task} trains on images, and data.source={data.source} is "
                        f"text: set task={text} to train a language model on it")
    if index is None and wants == "images" and data.source == "parquet":
        where, schema, _ = _first_schema(data.path)
        if field in schema.names:
            found = f"{where} holds text (a {field!r} column, data.text_field)"
            raise OtherData(f"task={task} trains on images, and {found}: set task={text} to "
                            f"train a language model on it", found)
    if index is None and wants == "tokens" and data.source == "parquet":
        where, schema, folder = _first_schema(data.path)
        if field not in schema.names and IMAGE_COLUMN not in schema.names:
            raise missing_text(where, schema, field, folder)
        if field not in schema.names:
            raise _holds_images(task, data.path, field)
    if index is None or index.kind == wants:
        return
    if wants == "images":
        raise DataError(f"task={task} trains on images, and {index.source} is text: set "
                        f"task={text} to train a language model on it")
    raise _holds_images(task, index.source, field)


def _holds_images(task: str, source: str, field: str) -> OtherData:
    found = f"{source} holds images (no {field!r} column, data.text_field)"
    return OtherData(f"task={task} trains on text, and {found}: set task=dit or vit, or give "
                     f"text (data.source=text)", found)


# what the built-in image sources hold
DIGITS = {"image_size": 8, "channels": 1, "num_classes": 10}
FASHION = {"image_size": 28, "channels": 1, "num_classes": 10}


def _refuse_other_shapes(data: DataConfig, shape: dict[str, int], what: str) -> None:
    """DataError naming each data.* key (and its value) that ``shape`` does not have."""
    wrong = [f"data.{key}={getattr(data, key)}" for key, value in shape.items()
             if getattr(data, key) != value]
    if wrong:
        right = ", ".join(f"data.{key}={value}" for key, value in shape.items())
        raise DataError(f"{', '.join(wrong)}: {what} ({right})")


def holds_text(data: DataConfig) -> bool:
    """Whether ``data`` is a text corpus, which open_data tokenizes: a text source, or Parquet
    whose first file has the column data.text_field names (read from its schema alone)."""
    return data.source in ("shakespeare", "text") or (
        data.source == "parquet" and data.text_field in _first_schema(data.path)[1].names)


def open_data(data: DataConfig) -> DataIndex:
    """The index of the data named by ``data`` (building cached shards on first use)."""
    from dbparallel.data.parquet_index import parquet_index

    if data.source == "digits":
        _refuse_other_shapes(data, DIGITS, "digits are 8x8, 1 channel, 10 classes")
        return _cached(parquet_index(digits_parquet(data.shard_rows), "digits"))
    if data.source == "fashion_mnist":
        from dbparallel.data.fashion import fashion_parquet

        _refuse_other_shapes(data, FASHION, "Fashion-MNIST is 28x28, 1 channel, 10 classes")
        path = fashion_parquet(data.path, data.shard_rows)
        index = parquet_index(path, "fashion_mnist")
        return _cached(index) if path != data.path else index  # converted into the cache
    if data.source == "image_folder":
        from dbparallel.data.image_folder import image_folder_index

        return image_folder_index(data)
    if holds_text(data):
        from dbparallel.data.corpus import corpus_index

        return corpus_index(data)
    if data.source == "parquet":
        return parquet_index(data.path)
    raise DataError(f"data.source: unknown data set {data.source!r}")


def load_table(data: DataConfig) -> pa.Table:
    """Every row of an image data set as one table with a ``split`` column: for small data
    sets and tools only (training and evaluation stream the index instead)."""
    index = open_data(data)
    if index.kind != "images":
        raise DataError(f"data.source={data.source}: load_table reads image data sets only")
    parts = []
    for split in index.present():
        for rows in iter_split(index, split, [IMAGE_COLUMN, LABEL_COLUMN]):
            table = rows.table
            parts.append(table.append_column(SPLIT_COLUMN, pa.array(
                np.full(table.num_rows, split, dtype=object), pa.string())))
    return pa.concat_tables(parts, promote_options="default")
