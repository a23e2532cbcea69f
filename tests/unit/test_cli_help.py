"""`--help` of every subcommand says what each argument is, and the default of each option
that has one, in the words `dbparallel COMMAND --help` prints."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from dbparallel.cli import parser

ROOT = Path(__file__).resolve().parents[2]


def subcommands() -> dict[str, argparse.ArgumentParser]:
    actions = parser()._actions
    return next(a for a in actions if isinstance(a, argparse._SubParsersAction)).choices


@pytest.mark.parametrize("command", sorted(subcommands()))
def test_every_argument_says_what_it_is(command: str) -> None:
    for action in subcommands()[command]._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = "/".join(action.option_strings) or action.metavar or action.dest
        assert action.help, f"dbparallel {command} {name}: no help"
        if not action.option_strings:  # a positional reads as the docs name it
            assert name == name.upper() or action.nargs == "*" or action.choices, \
                f"dbparallel {command} {name}: the docs call it {name.upper()}"
        default = action.default
        if action.option_strings and default not in (None, False, "", argparse.SUPPRESS):
            assert "default" in action.help, f"dbparallel {command} {name}: its default " \
                                             f"{default!r} is not said"


def test_help_prints_through_the_module() -> None:
    """What a user runs: the help of a subcommand of the installed entry point."""
    out = subprocess.run([sys.executable, "-m", "dbparallel", "generate", "--help"],
                         capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert "seed of the first sample (default 0)" in out and "RUN_DIR" in out
