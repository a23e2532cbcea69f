"""A split's pieces decoded one ahead on a thread (data/decoded_pieces.py), as data reshard
and data encode read them."""

from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dbparallel.data.decoded_pieces import decoded_pieces
from dbparallel.data.parquet_index import parquet_index
from dbparallel.errors import RowError

WAIT_S = 60.0  # a bound on waiting for the thread, never met unless the thread is missing


def _index(tmp_path, rows: int = 100, group: int = 10):
    pixels = pa.array(np.arange(rows, dtype=np.uint8))  # one pixel an image: its row number
    pq.write_table(pa.table({"image": pa.FixedSizeListArray.from_arrays(pixels, 1),
                             "label": pa.array(np.arange(rows) % 3),
                             "other": pa.array(np.zeros(rows))}),
                   tmp_path / "train.parquet", row_group_size=group)
    return parquet_index(str(tmp_path))


def _pixels(table: pa.Table) -> np.ndarray:
    return table.column("image").combine_chunks().flatten().to_numpy().astype(np.int64)


def _sum_images(table: pa.Table) -> int:
    values = _pixels(table)
    if (values == 37).any():
        raise RowError(int(np.flatnonzero(values == 37)[0]), "image", "is 37")
    return int(values.sum())


@pytest.mark.parametrize("ahead", [True, False])
def test_pieces_come_in_index_order_with_what_their_decoding_gave(tmp_path, ahead) -> None:
    got = list(decoded_pieces(_index(tmp_path), "train", ["image", "label"], _sum_images,
                              ahead))
    assert all(p.table.column_names == ["image", "label"] for p, _ in got)
    images = np.concatenate([_pixels(p.table) for p, _ in got])
    assert images.tolist() == list(range(100))
    sums = [d for _, d in got]
    bad = [d for d in sums if isinstance(d, RowError)]
    assert len(bad) == 1 and bad[0].row == 7  # row 37 is the 8th of the piece of rows 30-39
    assert sum(d for d in sums if not isinstance(d, RowError)) == sum(range(100)) - \
        sum(range(30, 40))
    plain = list(decoded_pieces(_index(tmp_path), "train", ["image", "label"], None, ahead))
    assert [d for _, d in plain] == [None] * len(got)


def test_the_next_piece_is_decoded_while_the_caller_holds_one(tmp_path) -> None:
    decoded = [threading.Event() for _ in range(10)]
    callers: set[str] = set()

    def decode(table: pa.Table) -> int:
        callers.add(threading.current_thread().name)
        first = int(_pixels(table)[0])
        decoded[first // 10].set()
        return first

    pieces = decoded_pieces(_index(tmp_path), "train", ["image"], decode)
    for _, first in pieces:
        if first + 10 < 100:  # the caller has not asked for it: only the thread decodes it
            assert decoded[first // 10 + 1].wait(WAIT_S)
    assert callers and all(name.startswith("decode-ahead") for name in callers)
    # one after the other, nothing is decoded before it is asked for
    for event in decoded:
        event.clear()
    pieces = decoded_pieces(_index(tmp_path), "train", ["image"], decode, ahead=False)
    _, first = next(pieces)
    assert first == 0 and not decoded[1].is_set()
    pieces.close()


def test_a_caller_that_stops_early_leaves_no_thread(tmp_path) -> None:
    pieces = decoded_pieces(_index(tmp_path), "train", ["image"], _sum_images)
    next(pieces)
    pieces.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("decode-ahead")]


def test_a_read_error_reaches_the_caller(tmp_path) -> None:
    index = _index(tmp_path)
    (tmp_path / "train.parquet").write_bytes(b"not parquet any more")
    with pytest.raises(Exception, match="train.parquet"):
        list(decoded_pieces(index, "train", ["image"], _sum_images))
