"""Progress of one long piece of work in a process (the gen_ppl scorer's training, the
evaluation's sampling): a bar on stderr on a terminal, where the training bars are drawn;
elsewhere (a log file, a Ray worker) a line on stderr every ``LINE_EVERY_S`` seconds, so the
log shows the work is alive, and a last one when it ends if any was written.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from types import TracebackType

from tqdm import tqdm

LINE_EVERY_S = 15.0  # seconds between two lines off a terminal (as the training's lines)

_SHOWN: ContextVar[bool | None] = ContextVar("dbparallel_progress_shown", default=None)


@contextlib.contextmanager
def progress_shown(shown: bool | None) -> Iterator[None]:
    """Within the block, a ``Progress`` not told ``tty`` draws its bar where ``shown`` is
    True and writes lines where it is False, as the run's block bars do for a call's
    ``progress``; where None, as stderr is a terminal or not."""
    token = _SHOWN.set(shown)
    try:
        yield
    finally:
        _SHOWN.reset(token)


def duration(seconds: float) -> str:
    """``45s``, ``3m05s``, ``2h04m``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """``update(n)`` counts ``n`` of ``total`` ``unit``s done; ``tty`` (default: as
    ``progress_shown`` says, else whether stderr is a terminal) chooses the bar over the
    lines."""

    def __init__(self, total: int, desc: str, unit: str, tty: bool | None = None,
                 line_every_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.total, self.desc, self.unit, self.clock = total, desc, unit, clock
        if tty is None:
            tty = _SHOWN.get()
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.line_every_s = LINE_EVERY_S if line_every_s is None else line_every_s
        self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False, disable=not self.tty)
        self.done, self.lines, self.said = 0, 0, 0  # said: the count the last line gave
        self.start_s = self.last_s = clock()

    def update(self, n: int = 1) -> None:
        self.bar.update(n)
        self.done += n
        now = self.clock()
        if not self.tty and now - self.last_s >= self.line_every_s:
            self.last_s = now
            self._print(self.line(now))

    def line(self, now: float) -> str:
        """``gen_ppl scorer: 120/1500 step, 2.40 step/s, eta 9m33s`` (``done in 10m25s``
        at the end)."""
        elapsed = now - self.start_s
        text = f"{self.desc}: {self.done}/{self.total} {self.unit}"
        if self.done and elapsed > 0:
            text += f", {self.done / elapsed:.2f} {self.unit}/s"
            if self.done < self.total:
                text += f", eta {duration((self.total - self.done) * elapsed / self.done)}"
        if self.done >= self.total:
            text += f", done in {duration(elapsed)}"
        return text

    def close(self) -> None:
        self.bar.close()
        if not self.tty and self.lines and self.said != self.done:
            self._print(self.line(self.clock()))

    def _print(self, text: str) -> None:
        self.lines, self.said = self.lines + 1, self.done
        print(text, file=sys.stderr, flush=True)  # stdout: results

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()
