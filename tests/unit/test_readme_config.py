"""The README's configuration table gives the schema's own defaults, for keys the schema has;
the docs name only commands the CLI has."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from dbparallel.config import Config, describe

README = Path(__file__).resolve().parents[2] / "README.md"
# defaults computed from other keys, as the table says: the schema declares them ""
DERIVED = {"run.dir": "runs/<name>", "run.name": "<data>-<task>"}
SECTIONS = ("run", "data", "model", "noise", "train", "sample", "runtime", "metrics", "debug")


def _rows() -> list[tuple[list[str], list[str]]]:
    """(keys, defaults) of each config row: `| `a.b`, `a.c` | 1, 2 | what |`."""
    rows = []
    for line in README.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("| `") or len(cells) < 3:
            continue
        keys = re.findall(r"`([a-z_]+\.[A-Za-z_]+)`", cells[0])
        if keys and keys[0].split(".")[0] in SECTIONS:
            rows.append((keys, re.split(r",\s*(?![^\[]*\])", cells[1])))
    return rows


def _declared(key: str) -> Any:
    """The default the schema's dataclass declares for ``key``, before Config resolves it."""
    section, leaf = key.split(".")
    return Config.__dataclass_fields__[section].default_factory.__dataclass_fields__[leaf].default


def _same(text: str, value: Any) -> bool:
    text = text.strip().strip("`").strip()
    text = "" if text in ('""', "''") else text
    if isinstance(value, bool):
        return text == str(value).lower()
    if isinstance(value, (int, float)):
        try:
            return float(text.replace(",", "")) == float(value)
        except ValueError:
            return False
    if value is None:
        return text == "null"
    return text == str(value)


def test_the_readme_table_gives_every_default_as_the_schema_has_it() -> None:
    defaults = dict(describe())
    rows = _rows()
    assert len(rows) > 40  # the table was found
    wrong = []
    for keys, values in rows:
        unknown = [k for k in keys if k not in defaults]
        assert not unknown, f"README names keys the schema lacks: {unknown}"
        assert len(values) == len(keys), f"{keys}: {len(values)} defaults for {len(keys)} keys"
        for key, text in zip(keys, values, strict=True):
            if key in DERIVED:
                assert _declared(key) == "" and DERIVED[key] in text, (key, text)
            elif not _same(text, defaults[key]):
                wrong.append(f"{key}: README {text.strip()!r}, schema {defaults[key]!r}")
    assert not wrong, "\n".join(wrong)


def test_every_command_the_docs_name_is_one_the_cli_has() -> None:
    import argparse

    from dbparallel.cli import parser

    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    named = {(doc.name, word) for doc in [README, *sorted(README.parent.glob("docs/*.md"))]
             for word in re.findall(r"`dbparallel ([a-z][a-z-]*)", doc.read_text())}
    assert named and not {n for n in named if n[1] not in sub.choices}
