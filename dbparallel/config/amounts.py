"""Amounts of memory in the config's units: read (``80GiB``) and written (``17.14 GiB``)."""

from __future__ import annotations

import math
import re

from dbparallel.errors import ConfigError

UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
         "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:e[+-]?[0-9]+)?"  # what float() reads, unsigned


def parse_bytes(text: str, key: str) -> int:
    """Bytes of ``80GiB``, ``24GB``, ``1.5e9`` or ``""`` (0); ConfigError naming ``key``, also
    for a number without a unit below 1 MiB (``24``: a unit left out)."""
    match = re.fullmatch(rf"\s*({NUMBER})\s*([a-z]*)\s*", str(text).lower())
    if not str(text).strip():
        return 0
    if not match or match.group(2) not in UNITS:
        raise ConfigError(f"{key}: {text!r} is not an amount of memory (e.g. 80GiB, 24GB)")
    amount = float(match.group(1)) * UNITS[match.group(2)]
    if not match.group(2) and 0 < amount < 2**20:  # "24" meant 24GiB, not 24 bytes
        raise ConfigError(f"{key}: {text!r} is {amount:g} bytes; give a unit (e.g. "
                          f"{match.group(1)}GiB, {match.group(1)}GB)")
    if not math.isfinite(amount):
        raise ConfigError(f"{key}: {text!r} is too large an amount of memory (e.g. 80GiB, 24GB)")
    return int(amount)


def bytes_text(n: float) -> str:
    """``n`` bytes as a person reads them: ``17.14 GiB``, ``51.6 KiB``, ``264 B``."""
    for unit, scale, digits in (("GiB", 2**30, 2), ("MiB", 2**20, 1), ("KiB", 2**10, 1)):
        if n >= scale:
            return f"{n / scale:.{digits}f} {unit}"
    return f"{int(n)} B"
