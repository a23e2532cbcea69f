"""The schema's checks: a ConfigError naming the dotted key, and the allowed values."""

from __future__ import annotations

from dbparallel.errors import ConfigError


def check(ok: bool, key: str, message: str) -> None:
    """ConfigError "``key``: ``message``" unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key}: {message}")


def choice(value: str, key: str, allowed: tuple[str, ...]) -> None:
    """ConfigError naming ``key``, ``value`` and the ``allowed`` ones unless it is one."""
    check(value in allowed, key, f"got {value!r}; allowed: {', '.join(allowed)}")
