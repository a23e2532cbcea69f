"""One progress bar per block on a terminal; periodic progress lines in logs (ray job logs)."""

from __future__ import annotations

import math
import sys
import time

from tqdm import tqdm


class BlockBars:
    """``update(block, step, loss)`` moves block's bar (lowest block on top) to ``step``;
    ``blocks`` is a count (blocks 0..n-1) or the ids of the blocks shown."""

    def __init__(self, blocks: int | list[int], steps: int, enabled: bool | None = None,
                 line_every_s: float = 15.0):
        self.tty = sys.stderr.isatty() if enabled is None else enabled
        self.steps, self.line_every_s = steps, line_every_s
        ids = list(range(blocks)) if isinstance(blocks, int) else sorted(blocks)
        self.bars = {
            b: tqdm(total=steps, desc=f"block {b}", position=i, leave=True,
                    disable=not self.tty, dynamic_ncols=True, mininterval=0.5)
            for i, b in enumerate(ids)
        }
        self.latest = {b: (0, math.nan) for b in ids}
        self._last_line = time.monotonic()

    def update(self, block: int, step: int, loss: float | None = None) -> None:
        bar = self.bars[block]
        bar.update(step - bar.n)
        self.latest[block] = (step, math.nan if loss is None else loss)
        if self.tty:
            if loss is not None and not math.isnan(loss):
                bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        elif time.monotonic() - self._last_line >= self.line_every_s:
            self._print_line()

    def _print_line(self) -> None:
        self._last_line = time.monotonic()
        parts = [f"block {b} {s}/{self.steps} loss {loss:.4f}"
                 for b, (s, loss) in self.latest.items()]
        print("progress: " + " | ".join(parts), flush=True)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
