"""The schema's checks: a ConfigError naming the dotted key, and the allowed values."""

from __future__ import annotations

import math
from contextvars import ContextVar
from dataclasses import fields
from typing import Any

from dbparallel.errors import ConfigError


def check(ok: bool, key: str, message: str) -> None:
    """ConfigError "``key``: ``message``" unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key}: {message}")


def choice(value: str, key: str, allowed: tuple[str, ...]) -> None:
    """ConfigError naming ``key``, ``value`` and the ``allowed`` ones unless it is one."""
    check(value in allowed, key, f"got {value!r}; allowed: {', '.join(allowed)}")


# set while a stored config (a run directory's config.yaml, an export's) is read back: it
# trained as it is, so values the schema now refuses only where the network could not be
# built or trained (finite) do not stop it from loading
STORED = ContextVar("stored", default=False)


def finite(section: Any, prefix: str, unbounded: tuple[str, ...] = ()) -> None:
    """ConfigError naming the first float key of the dataclass ``section`` (keys
    ``prefix.name``) that is nan or +-inf; the keys named in ``unbounded`` may be +inf
    ("never", a timeout). Not for a stored config (``STORED``)."""
    if STORED.get():
        return
    for f in fields(section):
        value = getattr(section, f.name)
        if isinstance(value, float) and not (f.name in unbounded and value == math.inf):
            check(math.isfinite(value), f"{prefix}.{f.name}",
                  f"must be a finite number{' (or inf: never)' if f.name in unbounded else ''}"
                  f", got {value}")
