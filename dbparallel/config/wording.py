"""How a config error is worded: the recipe that set the faulty key named in front, and
OmegaConf's own messages said in the terms of the keys (what a key takes, a key misspelled)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any


def from_file(key: str, files: list[str | Path], layers: list[Any], overrides: list[str],
               message: str) -> str:
    """``message`` with the recipe file that set ``key`` in front (the last one that does);
    as it is when no file sets it or an override on the command line sets it or a section or
    list above it (``model.widths=[...]`` for ``model.widths[1]``), or sets another key the
    message names as the other side of the fault (``model.blocks=3`` for model.depth)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    for item in overrides:
        given = item.split("=", 1)[0].strip()
        if key == given or key.startswith((given + ".", given + "[")) \
                or given.startswith((key + ".", key + "[")) or f"{given}=" in message:
            return message
    # the recipes that set ``key`` and the other side the message names (model.blocks=3), the
    # last of each: where two recipes disagree, both are named
    setters: list[str] = []
    for side in [key, *(k for k in re.findall(r"\b([a-z_]+(?:\.[a-z_0-9]+)+)=", message)
                        if k != key)]:
        for path, layer in reversed(list(zip(files, layers, strict=False))):
            try:  # a value that does not resolve (${nope}) is set by this file all the same
                found = OmegaConf.select(layer, side, default=_UNSET)
            except OmegaConfBaseException:
                found = None
            except Exception:  # noqa: BLE001 (naming the file is a help: never a second error)
                return message
            if found is not _UNSET:
                setters += [str(path)] if str(path) not in setters else []
                break
    return f"{' and '.join(setters)}: {message}" if setters else message


_UNSET = object()


def _prefixed(name: str, section: Any) -> list[str]:
    """The keys of the dataclass ``section`` that ``name`` begins or is the beginning of
    (train.ema for train.ema_decay, run.directory for run.dir): the near misses difflib's
    likeness, which OmegaConf suggests by, leaves out."""
    if not dataclasses.is_dataclass(section) or len(name) < 3:
        return []
    name = name.lower()
    return [f.name for f in dataclasses.fields(section)
            if len(f.name) >= 3 and (f.name.startswith(name) or name.startswith(f.name))]


def omegaconf_reason(err: Exception) -> str:
    """What an OmegaConf error says of its key, in the terms of the keys."""
    text = str(err).splitlines()[0]
    if type(err).__name__ == "ConfigKeyError":
        key = getattr(err, "full_key", None) or ""
        section = key.rsplit(".", 1)[0] + "." if "." in key else ""
        close = re.search(r"Did you mean(?: one of)?: (.*)\?$", text)
        names = re.findall(r"'([A-Za-z_0-9]+)'", close.group(1)) if close else []
        names = names or _prefixed(key.rsplit(".", 1)[-1], getattr(err, "object_type", None))
        hint = f"did you mean {' or '.join(section + n for n in names)}? " if names else ""
        return f"unknown key ({hint}see `dbparallel train --help-config` for the keys)"
    if "is not a ListConfig" in text:
        return "expects a list, e.g. [600, 400]"
    if text.startswith("Incompatible value 'None'"):
        return "needs a value (key=value)"
    if text.startswith("Invalid type assigned: NoneType is not a subclass of int"):
        return "expects an integer (e.g. 100), got null"  # an item of a list: [600, null]
    given = re.match(r"Cannot convert '(?:DictConfig|ListConfig)' to string: '(.*)'$", text)
    if given:  # text_field.x=1 or text_field=[a]: keys or a list where a string goes
        return f"expects a string, got {given.group(1)}"
    wrong = re.match(r"Value '(.*)' (?:of type '\w+' could not be converted to (\w+)"
                     r"|is not a valid (bool))", text)
    if wrong:
        kind = {"Integer": "an integer (e.g. 100)", "Float": "a number (e.g. 0.001)",
                "bool": "true or false"}.get(wrong.group(2) or wrong.group(3))
        if kind:
            return f"expects {kind}, got {wrong.group(1)!r}"
    return text
