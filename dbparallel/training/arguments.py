"""Checks of what a caller of the Python API passes a network's verbs: a value of another type
is a UserError naming the argument, as a bad value is, never a TypeError from deep inside."""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Any

from dbparallel.errors import UserError


def texts_of(value: Any, name: str) -> tuple[list[str], bool]:
    """(the texts of ``value``, whether it was one text): a string, or strings in a list,
    tuple, array, pandas column or any other iterable."""
    if isinstance(value, str):
        return [value], True
    if not isinstance(value, Iterable) or isinstance(value, (bytes, bytearray)):
        raise UserError(f"{name}: expected a string or a list of strings, got "
                        f"{type(value).__name__} {value!r:.40}")
    texts = list(value)
    bad = next((t for t in texts if not isinstance(t, str)), None)
    if bad is not None:
        raise UserError(f"{name}: expected a string or a list of strings, got "
                        f"{type(bad).__name__} {bad!r:.40} among them")
    return [str(t) for t in texts], False


def number(value: Any, name: str, whole: bool = False) -> None:
    """UserError naming ``name`` unless ``value`` is a real number (an integer, ``whole``)."""
    kind = numbers.Integral if whole else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        raise UserError(f"{name}: expected {'an integer' if whole else 'a number'}, got "
                        f"{type(value).__name__} {value!r:.40}")
