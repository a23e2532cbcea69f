"""How a run stops on Ctrl-C (SIGINT) and SIGTERM (``kill``, ``dbparallel stop``, ``ray job
stop``, a Kubernetes pod stopping): the first signal stops the run where it is, as
KeyboardInterrupt, and the run's own cleanup (the blocks' write leases released, Ray's actors
and instance stopped) then goes on undisturbed. A second signal during that cleanup says what
is under way instead of cutting it short (which left a run's processes to Ray's own exit); a
third quits at once, without the cleanup.

The CLI takes both signals for the whole command (``stop_signals``). ``dbparallel.train``, a
library call in someone else's program, takes only SIGTERM, only where that program left its
default (which ends the process at once: its leases left held, which a rerun on another
machine waits to lapse, a checkpoint perhaps half written) or the handler ``ray.init``
installs (as abrupt: Ray's crash handler aborts the process), only from the main thread, and
only for the call (``stop_on_sigterm``): a handler the program set, and Python's own
KeyboardInterrupt on Ctrl-C, stay as they are.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

EXIT_INTERRUPTED = 130  # as a shell reports a process stopped by SIGINT
EXIT_TERMINATED = 143  # and by SIGTERM
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Terminated(KeyboardInterrupt):
    """SIGTERM: the run stops as on Ctrl-C, releasing what it holds, and a rerun resumes."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(args or ("stopped by SIGTERM (`dbparallel stop`, kill): the "
                                    "checkpoints written stay, the blocks' write leases are "
                                    "released, and the same train call resumes the run",)))


class StopSignals:
    """The handler of ``signals`` (SIGINT and SIGTERM) for one command or call: counts the
    signals it is sent and keeps the first (a Ray call the signal interrupts raises a plain
    KeyboardInterrupt in place of Terminated, so the exception alone does not tell SIGTERM
    from Ctrl-C)."""

    def __init__(self, signals: tuple[int, ...] = SIGNALS) -> None:
        self.signals = signals
        self.count = 0
        self.first: int | None = None

    def terminated(self, err: KeyboardInterrupt) -> bool:
        """Whether the command stopped on SIGTERM."""
        return isinstance(err, Terminated) or self.first == signal.SIGTERM

    def __call__(self, signum: int, frame: object) -> None:
        self.count += 1
        if self.count == 1:
            self.first = signum
            raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
        if self.count == 2:  # os.write: a print here could meet one the main thread makes
            again = b"press Ctrl-C" if signal.SIGINT in self.signals else b"send SIGTERM"
            os.write(2, b"\ndbparallel: stopping: the run's cleanup (its write leases "
                        b"released, Ray's processes stopped) takes a few seconds; " + again
                     + b" again to quit at once\n")
            return
        os.write(2, b"\ndbparallel: quit without cleaning up (a rerun on this machine takes "
                    b"over the blocks' leases of a process that no longer runs)\n")
        _flush_quietly()  # what the run printed so far is kept: os._exit skips Python's flush
        os._exit(EXIT_TERMINATED if signum == signal.SIGTERM else EXIT_INTERRUPTED)


FLUSH_WAIT_S = 0.5  # the most the third signal's quit waits for what was printed


def _flush_quietly() -> None:
    """Flush stdout and stderr, from a thread waited for FLUSH_WAIT_S at most: a flush waits
    for another thread's write to a full pipe, and meets a closed one or the main thread's
    own (a reentrant-call RuntimeError); whatever it meets, the quit goes on."""
    def flush() -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()

    flusher = threading.Thread(target=flush, name="dbparallel-quit-flush", daemon=True)
    flusher.start()
    flusher.join(FLUSH_WAIT_S)


@contextlib.contextmanager
def stop_signals() -> Iterator[StopSignals | None]:
    """Install StopSignals on SIGINT and SIGTERM for the command's duration (from the main
    thread only; elsewhere nothing changes and None is yielded), then put back the handlers
    it replaced."""
    # A SIGINT ignored from the start stays ignored: a shell starts a background job (`cmd &`)
    # that way, so that a Ctrl-C meant for the foreground leaves it running.
    with _taking([s for s in SIGNALS if not (s == signal.SIGINT
                                             and signal.getsignal(s) == signal.SIG_IGN)]) as h:
        yield h


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[StopSignals | None]:
    """Install StopSignals on SIGTERM alone for a library call's duration, where SIGTERM has
    its default handler (the program set none) or the one ``ray.init`` installs (a program
    that joined Ray itself), and this is the main thread; elsewhere nothing changes and None
    is yielded. The handler it replaced is put back after the call."""
    taken = [signal.SIGTERM] if _default(signal.getsignal(signal.SIGTERM)) else []
    with _taking(taken) as handler:
        yield handler if taken else None


def _default(handler: Any) -> bool:
    """Whether SIGTERM's ``handler`` ends the process as the default does: the default
    itself, or the handler ``ray.init`` installs in a driver (an exit, under which Ray's own
    crash handler dumps the stack and aborts the process), which the program did not choose."""
    if handler == signal.SIG_DFL:
        return True
    return (getattr(handler, "__module__", None) == "ray._private.worker"
            and getattr(handler, "__qualname__", None) == "init.<locals>.sigterm_handler")


@contextlib.contextmanager
def _taking(signals: list[int]) -> Iterator[StopSignals | None]:
    """StopSignals on ``signals`` while the block runs (from the main thread only: elsewhere
    None), then the handlers it replaced."""
    if threading.current_thread() is not threading.main_thread():
        yield None
        return
    handler = StopSignals(tuple(signals))
    before: dict[int, Any] = {s: signal.signal(s, handler) for s in signals}
    try:
        yield handler
    finally:
        for s, previous in before.items():
            signal.signal(s, previous if previous is not None else signal.SIG_DFL)
