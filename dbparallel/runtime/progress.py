"""One progress bar per block on a terminal; periodic progress lines in logs (ray job logs),
both on stderr, as the evaluation's progress: stdout carries results alone.

A line shows only what is known: a block waiting for a free slot (more blocks than the cluster
trains at once) is ``queued``, one that has not reported yet is ``starting``, a loss (the
mean weighted loss of its last train.log_every steps, as ``dbparallel status`` and report.json
give it, not one step's) appears once the block has one, and an ETA once its step rate has
been observed (between its first report and its latest one, so the time it took to start does
not count).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from tqdm import tqdm

from dbparallel.training.progress import duration


@dataclass
class _Seen:
    """What one block has reported: its latest step and loss, and its first report."""

    step: int = 0
    loss: float = math.nan
    reported: bool = False
    queued: bool = False
    restarts: int = 0
    first_step: int = 0
    first_s: float = 0.0
    latest_s: float = 0.0
    finished: bool = False  # its terminal bar's clock is stopped

    def eta_s(self, steps: int) -> float | None:
        """Seconds to ``steps`` at the rate observed so far (None until there is one)."""
        if self.step <= self.first_step or self.latest_s <= self.first_s:
            return None
        rate = (self.step - self.first_step) / (self.latest_s - self.first_s)
        return (steps - self.step) / rate


class BlockBars:
    """``update(block, step, loss)`` moves block's bar (lowest block on top) to ``step``;
    ``blocks`` is a count (blocks 0..n-1) or the ids of the blocks shown; ``steps`` the
    steps of every block, or of each block shown, in the order of ``blocks``."""

    def __init__(self, blocks: int | list[int], steps: int | list[int],
                 enabled: bool | None = None, line_every_s: float = 15.0,
                 clock: Callable[[], float] = time.monotonic):
        self.tty = sys.stderr.isatty() if enabled is None else enabled
        self.line_every_s, self.clock = line_every_s, clock
        ids = list(range(blocks)) if isinstance(blocks, int) else list(blocks)
        counts = [steps] * len(ids) if isinstance(steps, int) else list(steps)
        assert len(counts) == len(ids), "one step count per block shown"
        self.steps = dict(sorted(zip(ids, counts, strict=True)))
        ids = sorted(ids)
        self.bars = {
            b: tqdm(total=self.steps[b], desc=f"block {b}", position=i, leave=True,
                    disable=not self.tty, dynamic_ncols=True, mininterval=0.5)
            for i, b in enumerate(ids)
        }
        self.seen = {b: _Seen() for b in ids}
        self._last_line = clock()

    def queue(self, blocks: list[int]) -> None:
        """Show ``blocks`` as waiting for a slot until ``start``."""
        for b in blocks:
            self.seen[b].queued = True
            self.bars[b].set_description(f"block {b} (queued)", refresh=False)

    def start(self, block: int, step: int | None = None) -> None:
        """``block`` got a slot and is starting (at ``step``, where known: a resumed one's
        steps before it are none of its rate). Its terminal bar's clock starts now: the time
        it waited (queued for a slot; with --local, behind the blocks before it) is not its."""
        self.seen[block].queued = False
        bar = self.bars[block]
        bar.set_description(f"block {block}", refresh=False)
        if self.tty:
            at = bar.n if step is None else step
            bar.reset()
            bar.n = bar.last_print_n = bar.initial = at

    def update(self, block: int, step: int, loss: float | None = None,
               restarts: int = 0) -> None:
        bar = self.bars[block]
        self.seen[block].restarts = restarts
        now, seen = self.clock(), self.seen[block]
        if not seen.reported:
            seen.reported, seen.first_step, seen.first_s = True, step, now
        seen.step, seen.latest_s = step, now
        if loss is not None and not math.isnan(loss):
            seen.loss = loss
        if self.tty:
            shown = {"loss": f"{seen.loss:.4f}"} if not math.isnan(seen.loss) else {}
            if restarts:
                shown["restarts"] = str(restarts)
            if shown:  # before the step moves the bar, which draws it: this step's loss
                bar.set_postfix(shown, refresh=False)
        bar.update(step - bar.n)
        if self.tty and step >= self.steps[block] and not seen.finished \
                and callable(getattr(bar, "_time", None)):  # (tqdm's clock: not its API)
            # the bar stays on screen until every block is done and assembled; its time and
            # rate stop with its last step, not at that close
            seen.finished, end = True, bar._time()
            bar._time = lambda: end
            bar.refresh()
        if not self.tty and now - self._last_line >= self.line_every_s:
            self._last_line = now
            print(self.line(), file=sys.stderr, flush=True)  # stdout: results

    def line(self) -> str:
        """``progress: block 0 40/200 loss 0.1234 eta 1m20s | block 1 0/200 starting``
        (``restarts 1`` after the loss of a block whose process was restarted)."""
        parts = []
        for b, seen in self.seen.items():
            steps = self.steps[b]
            part = f"block {b} {seen.step}/{steps}"
            if seen.queued:
                part += " queued"
            elif not seen.reported:
                part += " starting"
            if not math.isnan(seen.loss):
                part += f" loss {seen.loss:.4f}"
            if seen.restarts:
                part += f" restarts {seen.restarts}"
            eta = seen.eta_s(steps)
            if seen.step >= steps:
                part += " done"
            elif eta is not None:
                part += f" eta {duration(eta)}"
            parts.append(part)
        return "progress: " + " | ".join(parts)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
