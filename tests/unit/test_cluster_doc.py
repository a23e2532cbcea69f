"""docs/cluster.md quotes `dbparallel plan` outputs: each is what the command prints now."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from dbparallel.cli import main

DOC = Path(__file__).resolve().parents[2] / "docs" / "cluster.md"
ROOT = DOC.parents[1]


def _base() -> list[str]:
    """The arguments of the plan command the examples share (the first `sh` block)."""
    block = re.search(r"```sh\n(dbparallel plan .*?)```", DOC.read_text(), re.S)
    assert block, "docs/cluster.md: no `dbparallel plan` command"
    return shlex.split(block.group(1).replace("\\\n", " "))[2:]


def _quoted() -> list[tuple[list[str], str]]:
    """(extra arguments, output) of each block `dbparallel plan ... ARGS` + its output."""
    blocks = re.findall(r"```\ndbparallel plan \.\.\. ([^\n]*)\n(cluster .*?)```",
                        DOC.read_text(), re.S)
    return [(args.split(), out) for args, out in blocks]


def test_quoted_plan_outputs_are_what_plan_prints(capsys, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)  # the command names jobs/... as a user in the checkout does
    quoted, base = _quoted(), _base()
    assert len(quoted) >= 6
    printed: dict[tuple[str, ...], str] = {}
    for extra, expected in quoted:
        if tuple(extra) not in printed:  # the same command may be quoted twice
            assert main(["plan", *base, *extra]) == 0
            out = capsys.readouterr().out
            printed[tuple(extra)] = out[out.index("\ncluster ") + 1:]
        assert printed[tuple(extra)] == expected, extra
