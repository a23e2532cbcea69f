"""A split's rows a piece at a time, each decoded on a thread while the one before is used.

``data reshard data.resize=true`` and ``data encode`` decode every image on the CPU and then
rewrite it (as a PNG, or into latents by an encoder that may run on a GPU). Done one after the
other, the encoder waits for the decoding and the decoding for the encoder; here the next
piece is read and decoded while the caller rewrites the one before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa

from dbparallel.data.shard_reader import ShardRows, read_pieces
from dbparallel.data.shards import DataIndex
from dbparallel.errors import RowError

Decoded = tuple[ShardRows, object]  # a piece, and what its decoding gave (or its RowError)


def decoded_pieces(index: DataIndex, split: str, columns: list[str],
                   decode: Callable[[pa.Table], object] | None,
                   ahead: bool = True) -> Iterator[Decoded]:
    """Each piece of ``split``'s rows in index order (only ``columns``), with what ``decode``
    gave of its rows (a RowError where it met a bad row, counting rows from the piece's
    first; None without ``decode``). With ``ahead``, the next piece is read and decoded on a
    thread of its own while the caller handles one, so at most two pieces are held decoded;
    without, one after the other."""
    pieces = (piece for shard in index.shards(split)
              for piece in read_pieces(shard, columns, index.meta))

    def following() -> Decoded | None:
        piece = next(pieces, None)
        if piece is None:
            return None
        piece = ShardRows(piece.shard, piece.table.select(columns), piece.file_rows)
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
