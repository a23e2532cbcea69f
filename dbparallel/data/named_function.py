"""A function of the user's own code named by "module:function" (sample.decoder, `data encode
--encoder`): imported where it is used, with an error naming the setting where it is not
there."""

from __future__ import annotations

import importlib
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dbparallel.errors import UserError


def named_function(spec: str, setting: str) -> Callable[..., Any]:
    """The function ``spec`` ("module:function") names; UserError naming ``setting`` (e.g.
    ``sample.decoder=vae:decode``) where it is not of that form, does not import here, or is
    not a function."""
    module_name, _, name = spec.partition(":")
    if not module_name or not name.isidentifier():
        raise UserError(f"{setting}: must be module:function (e.g. mypackage.vae:decode)")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 (any error of the user's module is named)
        raise UserError(f"{setting}: cannot import {module_name!r} here "
                        f"({type(err).__name__}: {err}); it must be importable where it is "
                        f"used: installed, or on PYTHONPATH") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise UserError(f"{setting}: module {module_name!r} has no function {name!r}")
    return function


def own_source(spec: str) -> str | None:
    """Where the top module of the (imported) function ``spec`` names lies, as a file or a
    package's folder, when it is the user's own code: not installed (in site-packages or
    Python's own library). None for installed code, which another machine has installed or
    not, and for modules that are no file."""
    top = sys.modules.get(spec.partition(":")[0].partition(".")[0])
    if top is None:
        return None
    paths = list(getattr(top, "__path__", None) or [])  # a package's folders
    if len(paths) > 1:  # a namespace package spread over folders: not one thing to send
        return None
    where = paths[0] if paths else getattr(top, "__file__", None)
    if not where:
        return None
    source = Path(where).resolve()
    installed = {Path(p).resolve() for key in ("stdlib", "platstdlib", "purelib", "platlib")
                 if (p := sysconfig.get_paths().get(key))}
    if any(source.is_relative_to(root) for root in installed) or \
            "site-packages" in source.parts or "dist-packages" in source.parts:
        return None
    return str(source)
