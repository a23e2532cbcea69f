"""Decoding encoded images as a window is unpacked: rows/s with 1..N decode threads.

A block unpacks each window of its data once, in its reading thread (docs/data.md); encoded
images (PNG, JPEG) are decoded there, by ``data.decode_threads`` threads (default: one per CPU
of ``runtime.cpus_per_block``). This times ``image_rows``, the function the image tasks'
``unpack`` calls, on one window-sized table of random images per format, with every thread count
from 1 to this machine's cores, side by side in one run; each time is the median of repeats.
``speedup`` is rows/s over the 1-thread rows/s of the same format.

    python benchmarks/decode.py [--quick] [--json] [--wait-idle MINUTES]
"""

from __future__ import annotations

import io
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import finish, load_average, machine, parser, settle  # noqa: E402
from dbparallel.config import DataConfig  # noqa: E402
from dbparallel.data.encoded import MIN_ROWS_PER_THREAD  # noqa: E402
from dbparallel.data.images import image_rows  # noqa: E402

# (name, side, Pillow format, save options, rows, quick rows)
FORMATS = [("png 64x64 rgb", 64, "PNG", {}, 2048, 256),
           ("jpeg 256x256 rgb q90", 256, "JPEG", {"quality": 90}, 512, 64)]


def table_of(side: int, fmt: str, options: dict[str, Any], rows: int) -> pa.Table:
    """``rows`` encoded images of smooth random colour (compressible like photographs)."""
    rng = np.random.default_rng(0)
    blobs = []
    for _ in range(rows):
        small = rng.integers(0, 256, (side // 8, side // 8, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((side, side), Image.BILINEAR)
        out = io.BytesIO()
        img.save(out, fmt, **options)
        blobs.append(out.getvalue())
    return pa.table({"image": pa.array(blobs, pa.binary()),
                     "label": pa.array(rng.integers(0, 10, rows))})


def rows_per_second(table: pa.Table, data: DataConfig, threads: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        image_rows(table, data, threads)
        times.append(time.perf_counter() - start)
    return table.num_rows / statistics.median(times)


def run(quick: bool = False) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    repeats = 3 if quick else 7
    before = load_average()
    rows = []
    for name, side, fmt, options, n, n_quick in FORMATS:
        table = table_of(side, fmt, options, n_quick if quick else n)
        data = DataConfig(image_size=side, channels=3, num_classes=10)
        image_rows(table, data, 1)  # warm-up: Pillow's plugins, page faults
        base = None
        for threads in range(1, cores + 1):
            rate = rows_per_second(table, data, threads, repeats)
            base = base or rate
            rows.append({"format": name, "rows": table.num_rows,
                         "encoded_bytes": table.column("image").nbytes, "threads": threads,
                         "effective_threads": max(1, min(threads, table.num_rows
                                                         // MIN_ROWS_PER_THREAD)),
                         "rows_per_s": rate, "speedup": rate / base})
    return {"rows": rows, "cores": cores, "repeats": repeats, "quick": quick,
            "load_average_before": before, "load_average_after": load_average(),
            "machine": machine()}


def table(result: dict[str, Any]) -> str:
    lines = [f"{'format':<22} {'rows':>6} {'threads':>7} {'rows/s':>10} {'speedup':>8}"]
    for r in result["rows"]:
        lines.append(f"{r['format']:<22} {r['rows']:>6} {r['threads']:>7} "
                     f"{r['rows_per_s']:>10,.0f} {r['speedup']:>8.2f}")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in dict.fromkeys(r["format"] for r in result["rows"]):
        mine = [r for r in result["rows"] if r["format"] == name]
        ax.plot([r["threads"] for r in mine], [r["speedup"] for r in mine], "o-", label=name)
    top = result["cores"]
    ax.plot([1, top], [1, top], "k:", label="linear")
    ax.set_xlabel("decode threads (data.decode_threads)")
    ax.set_ylabel("rows/s over 1 thread")
    ax.set_title(f"Decoding a window's encoded images ({result['cores']} cores)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    args = parser(__doc__.splitlines()[0], timed=True).parse_args()
    settle(args, "decode")
    finish("decode", run(args.quick), args, table, plot)


if __name__ == "__main__":
    main()
