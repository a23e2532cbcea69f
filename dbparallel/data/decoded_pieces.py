"""A split's rows a piece at a time, each decoded on a thread while the one before is used.

``data reshard data.resize=true`` and ``data encode`` decode every image on the CPU and then
rewrite it (as a PNG, or into latents by an encoder that may run on a GPU). Done one after the
other, the encoder waits for the decoding and the decoding for the encoder; here the next
piece is read and decoded while the caller rewrites the one before.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa

from dbparallel.data.shard_reader import ShardRows, read_pieces
from dbparallel.data.shards import DataIndex
from dbparallel.errors import RowError

Decoded = tuple[ShardRows, object]  # a piece, and what its decoding gave (or its RowError)


def decoded_pieces(index: DataIndex, split: str, columns: list[str],
                   decode: Callable[[pa.Table], object] | None, ahead: bool = True,
                   start: int = 0, stop: int | None = None) -> Iterator[Decoded]:
    """Each piece of ``split``'s rows [``start``, ``stop``) in index order (only
    ``columns``), with what ``decode`` gave of its rows (a RowError where it met a bad row,
    counting rows from the piece's first; None without ``decode``). With ``ahead``, the next
    piece is read and decoded on a thread of its own while the caller handles one, so at most
    two pieces are held decoded; without, one after the other."""
    pieces = _pieces(index, split, columns, start, stop)

    def following() -> Decoded | None:
        piece = next(pieces, None)
        if piece is None:
            return None
        try:
            return piece, decode(piece.table) if decode is not None else None
        except RowError as err:
            return piece, err

    if not ahead:
        yield from iter(following, None)
        return
    with ThreadPoolExecutor(1, thread_name_prefix="decode-ahead") as pool:
        got = pool.submit(following)
        try:
            while (done := got.result()) is not None:
                got = pool.submit(following)  # the next, while the caller handles this one
                yield done
        finally:
            got.cancel()  # stopped early: the piece being decoded is the last


def _pieces(index: DataIndex, split: str, columns: list[str], start: int,
            stop: int | None) -> Iterator[ShardRows]:
    """The pieces of ``split``'s rows [``start``, ``stop``): the shards before ``start`` are
    skipped unread; a shard that holds ``start`` is read from its first row (a row group
    cannot be read from the middle) and its rows before it dropped."""
    at = 0  # the split's row of the next piece's first
    for shard in index.shards(split):
        if stop is not None and at >= stop:
            return
        if at + shard.rows <= start:
            at += shard.rows
            continue
        for piece in read_pieces(shard, columns, index.meta):
            rows = piece.table.num_rows
            low, high = max(start - at, 0), rows if stop is None else min(stop - at, rows)
            at += rows
            if high > low:
                yield _sliced(piece, columns, low, high)
            if stop is not None and at >= stop:
                return


def _sliced(piece: ShardRows, columns: list[str], low: int, high: int) -> ShardRows:
    """Rows [low, high) of ``piece``, only ``columns``; a piece of image files keeps the
    names of its rows' files, which name its bad rows."""
    shard = piece.shard
    if shard.kind == "files" and (low, high) != (0, piece.table.num_rows):
        shard = dataclasses.replace(shard, rows=high - low, files=shard.files[low:high],
                                    labels=shard.labels[low:high])
    return ShardRows(shard, piece.table.select(columns).slice(low, high - low),
                     piece.file_rows[low:high])
