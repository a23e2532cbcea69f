"""The port a run serves its metrics on, on a machine where other runs, and other blocks'
processes of one run (``--local --block``), may serve theirs: ``metrics.port`` if it is free,
else one of the ports after it, and the line that says which."""

from __future__ import annotations

import socket

from dbparallel.errors import UserError

PORT_TRIES = 16  # metrics.port and the ports after it tried, for processes on one host


def free_port(port: int, tries: int = PORT_TRIES) -> int:
    """``port`` if it can be bound on this machine, else the first of the ``tries - 1`` after
    it that can (another run, or another block's process, serves on it); UserError naming
    metrics.port if none can. For a port another program binds (Ray's metrics export): it
    may be taken again before that; a local run binds its server in ``serve`` instead."""
    for candidate in range(port, min(port + tries, 65536)):
        with socket.socket() as s:
            try:
                s.bind(("", candidate))
                return candidate
            except OSError:
                continue
    raise ports_in_use(port, min(port + tries, 65536) - 1)


def ports_in_use(first: int, last: int) -> Exception:
    """The UserError of a run that finds ports ``first`` to ``last`` all taken."""
    return UserError(f"metrics.port: ports {first} to {last} are in use on this machine; "
                     "choose another, or metrics.port=0 to serve no metrics")


def port_line(asked: int, port: int) -> str:
    """What a run prints of the metrics port it serves on."""
    moved = f" ({asked} is in use)" if port != asked else ""
    return f"metrics: http://127.0.0.1:{port}/metrics{moved}"
