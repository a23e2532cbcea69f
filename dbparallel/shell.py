"""How a path or URI is written in a command the tool tells the user to run: quoted for a
POSIX shell where it needs it (``s3://b/x?endpoint_override=h:1&scheme=http``, in which
``&`` would end the command), as it is where it does not (``runs/tiny``)."""

from __future__ import annotations

import os
import shlex


def shell_path(path: str | os.PathLike[str]) -> str:
    """``path`` as one word of a shell command to paste: ``'s3://b/x?a=1&b=2'``, or
    ``runs/tiny`` unchanged."""
    return shlex.quote(os.fspath(path))
