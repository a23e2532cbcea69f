"""Decoding rows past their bad ones, so that a pass over the data names every bad row, not
only the first.

A decode raises a RowError at the first bad row its *current* check meets: the image check
runs over every row before the label check, a raw pixel list's nulls and lengths are looked at
before its values. So a failure at row r says nothing of the rows before r: they may hold a
bad row of another kind. ``decode_past_bad_rows`` decodes them again on their own, then names
r, then goes on after it; every row is decoded in a part that holds no bad row, or named.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from dbparallel.errors import RowError

T = TypeVar("T")


def decode_past_bad_rows(decode: Callable[[int, int], T], rows: int,
                         limit: int) -> tuple[list[tuple[int, int, T]], list[tuple[int, RowError]]]:
    """Rows [0, ``rows``) decoded by ``decode(start, stop)`` (whose RowError counts rows from
    ``start``): (start, stop, what ``decode`` gave) of each part that decoded, and (row, its
    error) of each bad row, both in row order; it stops once ``limit`` bad rows are found."""
    parts: list[tuple[int, int, T]] = []
    bad: list[tuple[int, RowError]] = []
    pending: list[tuple[int, int, RowError | None]] = [(0, rows, None)]  # taken from the end
    while pending and len(bad) < limit:
        start, stop, err = pending.pop()
        if err is not None:
            bad.append((start, err))
        elif start < stop:
            try:
                parts.append((start, stop, decode(start, stop)))
            except RowError as found:
                at = start + found.row
                pending += [(at + 1, stop, None), (at, at + 1, found), (start, at, None)]
    return parts, bad
