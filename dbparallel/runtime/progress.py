"""One progress bar per block on a terminal; periodic progress lines in logs (ray job logs)."""

from __future__ import annotations

import math
import sys
import time

from tqdm import tqdm


class BlockBars:
    """``update(block, step, loss)`` moves block's bar (block 0 on top) to ``step``."""

    def __init__(self, blocks: int, steps: int, enabled: bool | None = None,
                 line_every_s: float = 15.0):
        self.tty = sys.stderr.isatty() if enabled is None else enabled
        self.steps, self.line_every_s = steps, line_every_s
        self.bars = [
            tqdm(total=steps, desc=f"block {b}", position=b, leave=True, disable=not self.tty,
                 dynamic_ncols=True, mininterval=0.5)
            for b in range(blocks)
        ]
        self.latest = [(0, math.nan)] * blocks
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
                 for b, (s, loss) in enumerate(self.latest)]
        print("progress: " + " | ".join(parts), flush=True)

    def close(self) -> None:
        for bar in self.bars:
            bar.close()
