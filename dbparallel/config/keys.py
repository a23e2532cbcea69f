"""The schema's keys for ``--help-config``: every dotted key with its default (or its value
in a config), and what it means, read from the schema's own comments."""

from __future__ import annotations

import inspect
import re
from dataclasses import fields, is_dataclass
from typing import Any

from dbparallel.config.schema import Config


def describe(cls: type = Config, prefix: str = "",
             values: Any = None) -> list[tuple[str, Any]]:
    """(dotted key, value) for every leaf of the schema, for help output: its default, or its
    value in ``values`` (a loaded config, or the ``unchecked`` merge of one)."""
    out: list[tuple[str, Any]] = []
    default = cls()
    source = default if values is None else values
    for f in fields(cls):
        value, inner = getattr(source, f.name), getattr(default, f.name)
        if is_dataclass(inner):
            out.extend(describe(type(inner), f"{prefix}{f.name}.", value))
        else:
            out.append((f"{prefix}{f.name}", value))
    return out


def notes(cls: type = Config, prefix: str = "") -> dict[str, str]:
    """What each dotted key means, from the schema's own comments (``--help-config``): a
    field's comment on its line, with the comment lines after it when the next field has its
    own or a blank line ends them, or the comment lines before it; comments inside a method
    (``__post_init__``'s) are no field's."""
    out: dict[str, str] = {}
    default = cls()
    pending: list[str] = []
    last, after_field = "", False  # after_field: the lines pending follow a field's line
    for line in inspect.getsource(cls).splitlines():
        text = line.strip()
        if text.startswith("#"):
            if re.match(r"\s{4}#", line):  # a method's own comments say nothing of a field
                pending.append(text.lstrip("# "))
            continue
        match = re.match(r"\s{4}(\w+): [^=]+=.*?(?:#\s*(.*))?$", line)
        if not match or match.group(1) not in {f.name for f in fields(cls)}:
            if not text and pending and last and after_field:  # they continue that field's
                out[last] += " " + " ".join(pending)
            pending = [] if not text else pending
            after_field = False
            continue
        name, inline = match.group(1), match.group(2)
        if inline and pending and last:  # the lines before continue the previous field's
            out[last] += " " + " ".join(pending)
            pending = []
        value = getattr(default, name)
        if is_dataclass(value):  # a section: the lines before continue the previous field's
            if pending and last:
                out[last] += " " + " ".join(pending)
            out.update(notes(type(value), f"{prefix}{name}."))
            pending, last = [], ""
            continue
        last, after_field = f"{prefix}{name}", True
        out[last] = " ".join([inline] if inline else pending)
        pending = []
    if pending and last:
        out[last] += " " + " ".join(pending)
    return out

