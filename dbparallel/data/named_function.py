"""A function of the user's own code named by "module:function" (sample.decoder, `data encode
--encoder`): imported where it is used, with an error naming the setting where it is not
there."""

from __future__ import annotations

import importlib
from collections.abc import Callable
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

