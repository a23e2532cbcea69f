"""How a path or URI is written in a command the tool tells the user to run: quoted for a
POSIX shell where it needs it (``s3://b/x?endpoint_override=h:1&scheme=http``, in which
``&`` would end the command), as it is where it does not (``runs/tiny``); and the command a
stopped Ray job is resubmitted with."""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence

# set by Ray's job manager for a job's entrypoint alone (Ray 2.x sets neither RAY_JOB_ID,
# which it removes, nor a RAY_SUBMISSION_ID there): its runtime env and metadata, as JSON
RAY_JOB_VAR = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def shell_path(path: str | os.PathLike[str]) -> str:
    """``path`` as one word of a shell command to paste: ``'s3://b/x?a=1&b=2'``, or
    ``runs/tiny`` unchanged."""
    return shlex.quote(os.fspath(path))


def resubmit_line(argv: Sequence[str]) -> str:
    """What resumes a stopped Ray job whose entrypoint runs ``argv`` (a process's, as
    ``sys.orig_argv`` or /proc/PID/cmdline give it): the same job resubmitted, the command
    as typed (``python -m dbparallel train ...``; ``dbparallel train ...`` for the installed
    script, whose interpreter its shebang put first)."""
    argv = list(argv)
    if len(argv) > 1 and os.path.basename(argv[1]) == "dbparallel":
        argv = ["dbparallel", *argv[2:]]
    return f"resubmit the same job to resume: `ray job submit ... -- {shlex.join(argv)}`"
