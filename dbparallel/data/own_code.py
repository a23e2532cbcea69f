"""The user's own module of a "module:function" setting, sent by value to another machine.

``data encode --encoder vae_codec:encode`` on a Ray cluster runs the encoder in tasks on other
nodes, where ``vae_codec.py``, importable where the command runs (the current folder, or
``PYTHONPATH``), may not be. Where the function's top module is the user's own code (a file, or
a package's folder, not installed in site-packages or Python's own library), ``pack`` reads
its files (a package's whole folder, without caches and hidden files, up to ``MAX_BYTES``),
and ``unpack`` writes them on the other machine into a folder named by their digest, put first
on ``sys.path``: the module imported there is the one imported here. Installed code is not
sent: it must be installed on every node. Each unpack marks its folder used; folders of code
that no task has used for ``KEEP_S`` (earlier versions, those of cancelled tasks) are removed
by the next unpack on that machine.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from dbparallel.errors import UserError

MAX_BYTES = 64 * 2**20  # the most of the user's own code sent with every task
KEEP_S = 24 * 3600.0  # a folder of sent code no task has used for this long is removed


@dataclass(frozen=True)
class OwnCode:
    """Files by their path relative to the folder that holds the top module, and their
    digest."""

    files: dict[str, bytes]
    digest: str


def pack(spec: str, setting: str) -> OwnCode | None:
    """The files of the top module of ``spec`` ("module:function", imported here), where it
    is the user's own code; None for installed code and modules that are no file. UserError
    naming ``setting`` where they exceed MAX_BYTES."""
    top = sys.modules.get(spec.partition(":")[0].partition(".")[0])
    source = _own_source(top)
    if source is None:
        return None
    paths = sorted(p for p in source.rglob("*") if p.is_file() and not _skipped(p, source)) \
        if source.is_dir() else [source]
    total = sum(p.stat().st_size for p in paths)
    if total > MAX_BYTES:
        raise UserError(f"{setting}: its module's folder {source} holds {total / 2**20:.1f} "
                        f"MiB, more than the {MAX_BYTES / 2**20:.0f} MiB sent with the tasks; "
                        f"install it on every node, or keep large files (weights) out of it")
    files = {str(p.relative_to(source.parent)): p.read_bytes() for p in paths}
    digest = hashlib.sha256()
    for name, data in files.items():
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return OwnCode(files, digest.hexdigest()[:16])


def unpack(code: OwnCode) -> None:
    """Write ``code``'s files into a folder of this machine named by its digest (once), and
    put that folder first on ``sys.path``, forgetting any version of its modules this
    process imported before."""
    folder = Path(tempfile.gettempdir()) / f"dbparallel-code-{code.digest}"
    if not folder.is_dir():
        staging = Path(tempfile.mkdtemp(prefix=f"{folder.name}.", dir=folder.parent))
        for name, data in code.files.items():
            path = staging / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        try:
            os.rename(staging, folder)  # whole, or not at all: another task may race here
        except OSError:
            if not folder.is_dir():
                raise
            shutil.rmtree(staging, ignore_errors=True)  # the other task's is there
    os.utime(folder)  # used now: not removed while tasks use it
    _remove_unused(folder.parent)
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
        importlib.invalidate_caches()
        # a process kept for the next task (a Ray worker) may hold an earlier version of
        # these modules: the next import reads this one
        tops = {name.split("/")[0].removesuffix(".py") for name in code.files}
        for module in [m for m in sys.modules if m.partition(".")[0] in tops]:
            del sys.modules[module]


def _remove_unused(parent: Path) -> None:
    """Remove the folders of sent code (and staging folders left by a cancelled task) under
    ``parent`` that no task has used for KEEP_S."""
    old = time.time() - KEEP_S
    for path in parent.glob("dbparallel-code-*"):
        try:
            unused = path.is_dir() and path.stat().st_mtime < old
        except OSError:  # removed meanwhile by another task
            continue
        if unused:
            shutil.rmtree(path, ignore_errors=True)


def own_modules(function: object) -> tuple[str, ...]:
    """The top modules of the user's own code that ``function`` (a function, a bound method,
    a callable object) and its object's class are defined in: a worker elsewhere cannot
    import them, so a function of theirs is sent by value with its code (``__main__`` always
    is)."""
    names = {getattr(function, "__module__", None),
             type(getattr(function, "__self__", function)).__module__}
    tops = {n.partition(".")[0] for n in names if isinstance(n, str)} - {"__main__"}
    return tuple(sorted(t for t in tops if _own_source(sys.modules.get(t)) is not None))


def _own_source(top: object) -> Path | None:
    """The file or package folder of module ``top`` when it is the user's own code."""
    if top is None:
        return None
    paths = list(getattr(top, "__path__", None) or [])  # a package's folders
    if len(paths) > 1:  # a namespace package spread over folders: not one thing to send
        return None
    where = paths[0] if paths else getattr(top, "__file__", None)
    if not where:
        return None
    source = Path(where).resolve()
    installed = [Path(p).resolve() for key in ("stdlib", "platstdlib", "purelib", "platlib")
                 if (p := sysconfig.get_paths().get(key))]
    if any(source.is_relative_to(root) for root in installed) or \
            {"site-packages", "dist-packages"} & set(source.parts):
        return None
    return source


def _skipped(path: Path, root: Path) -> bool:
    parts = path.relative_to(root).parts
    return any(p == "__pycache__" or p.startswith(".") for p in parts)
