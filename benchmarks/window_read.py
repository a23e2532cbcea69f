"""Reading a window with data.read_threads: seconds and MB/s with 1..N threads.

A block reads each window of its data (``data.window_shards`` shards) in its reading thread
(training/stream.py); ``data.read_threads`` threads read its shards at once. This times
``Window.read`` of one window of raw 8-bit RGB pixels stored as Parquet lists (the layout whose
decoding costs most: Arrow decodes a level per pixel) with every thread count from 1 to this
machine's cores, side by side in one run, each the median of repeats, with the process's
resident-memory growth at its peak (the pieces in flight; Linux only). ``speedup`` is MB/s over
1 thread's.

    python benchmarks/window_read.py [--quick] [--json] [--wait-idle MINUTES]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.batch_ahead import raw_images  # noqa: E402
from benchmarks.common import (  # noqa: E402
    ReadMemory,
    finish,
    load_average,
    machine,
    parser,
    settle,
)
from dbparallel.config import Config, DataConfig  # noqa: E402
from dbparallel.data.parquet_index import parquet_index  # noqa: E402
from dbparallel.tasks.image_generation import ImageGeneration  # noqa: E402
from dbparallel.training.stream import Window  # noqa: E402

# (image side, rows per shard, shards in the window); quick: smaller
SETTING, QUICK = (256, 256, 4), (64, 256, 4)


def run(quick: bool = False, setting: tuple[int, int, int] | None = None) -> dict[str, Any]:
    side, rows, shards = setting or (QUICK if quick else SETTING)
    cores, repeats = os.cpu_count() or 1, 3 if quick else 5
    before = load_average()
    task = ImageGeneration(Config(data=DataConfig(image_size=side, channels=3,
                                                  num_classes=10)))
    out = []
    with tempfile.TemporaryDirectory() as folder:
        index = parquet_index(str(raw_images(side, rows * shards, rows, Path(folder))))
        ids = list(range(len(index.shards("train"))))
        nbytes = Window.read(index, "train", ids, task).rows["image"].nbytes  # and a warm-up
        base = None
        for threads in range(1, min(cores, shards) + 1):
            times, memory = [], ReadMemory()
            for _ in range(repeats):
                start = time.perf_counter()
                window = Window.read(index, "train", ids, task, readers=threads)
                times.append(time.perf_counter() - start)
                del window
            seconds = statistics.median(times)
            rate = nbytes / seconds / 1e6
            base = base or rate
            out.append({"threads": threads, "side": side, "shards": shards, "rows": rows * shards,
                        "window_bytes": nbytes, "seconds": seconds, "mb_per_s": rate,
                        "speedup": rate / base,
                        "process_peak_growth_bytes": memory.result()["process_peak_bytes"]})
    return {"rows": out, "cores": cores, "repeats": repeats, "quick": quick,
            "load_average_before": before, "load_average_after": load_average(),
            "machine": machine()}


def table(result: dict[str, Any]) -> str:
    lines = [f"{'threads':>7} {'window MiB':>10} {'seconds':>8} {'MB/s':>8} {'speedup':>8} "
             f"{'peak growth MiB':>15}"]
    for r in result["rows"]:
        lines.append(f"{r['threads']:>7} {r['window_bytes'] / 2**20:>10.1f} "
                     f"{r['seconds']:>8.3f} {r['mb_per_s']:>8.0f} {r['speedup']:>8.2f} "
                     f"{r['process_peak_growth_bytes'] / 2**20:>15.1f}")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    threads = [r["threads"] for r in result["rows"]]
    ax.plot(threads, [r["mb_per_s"] for r in result["rows"]], "o-")
    ax.set_xticks(threads)
    ax.set_xlabel("data.read_threads")
    ax.set_ylabel("MB/s of unpacked rows")
    r = result["rows"][0]
    ax.set_title(f"Reading a window: {r['shards']} shards of 3x{r['side']}x{r['side']} uint8 "
                 f"({result['cores']} cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    args = parser(__doc__.splitlines()[0], timed=True).parse_args()
    settle(args, "window_read")
    finish("window_read", run(args.quick), args, table, plot)


if __name__ == "__main__":
    main()
