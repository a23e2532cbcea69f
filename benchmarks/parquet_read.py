"""Reading one Parquet row group: whole at once against a few MiB at a time (read_pieces).

A block fills its window from Parquet row groups (docs/data.md). Read whole
(``ParquetFile.read_row_group``), Arrow decodes all of a row group's pages at once, and for
list columns its peak is several times the pixels themselves (measured here; the repetition
and definition levels it decodes for every value are the likely cause, not profiled).
``dbparallel.data.shard_reader.read_pieces`` reads the row group about ``PIECE_BYTES`` of rows
at a time. Per layout and row-group size, each arm runs in a fresh process and passes each
piece on without keeping it (as a window fill does): what the read adds to the process's
resident memory at its peak (Linux: VmHWM, reset before the read, less VmRSS before it),
Arrow's own peak, and seconds (median of repeats). Layouts: uint8 pixels as fixed-size lists
(the Fashion-MNIST cache's), float32 pixels as lists, and encoded image bytes (one binary
value a row).

    python benchmarks/parquet_read.py [--quick] [--json] [--wait-idle MINUTES]
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    ReadMemory,
    finish,
    fresh_runs,
    load_average,
    machine,
    parser,
    settle,
)

LAYOUTS = ("uint8 fixed-size lists", "float32 lists", "encoded bytes")
SIZES_MIB = (16, 64, 256)  # one row group of about this many MiB of pixels
QUICK_SIZES_MIB = (8,)
ROW_PIXELS = 3 * 32 * 32
ARMS = ("whole", "pieces")


def write(layout: str, mib: int, path: Path) -> int:
    """One row group of about ``mib`` MiB of rows in ``layout``; returns its rows."""
    table = group_table(layout, mib)
    pq.write_table(table, path, row_group_size=table.num_rows)
    return table.num_rows


def group_table(layout: str, mib: int) -> pa.Table:
    """About ``mib`` MiB of random images in ``layout``, and labels, as one chunk."""
    itemsize = 4 if layout == "float32 lists" else 1
    rows = max(1, (mib << 20) // (ROW_PIXELS * itemsize))
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (rows, ROW_PIXELS), dtype=np.uint8)
    if layout == "uint8 fixed-size lists":
        image = pa.FixedSizeListArray.from_arrays(pa.array(pixels.ravel()), ROW_PIXELS)
    elif layout == "float32 lists":
        offsets = pa.array(np.arange(rows + 1, dtype=np.int32) * ROW_PIXELS)
        image = pa.ListArray.from_arrays(offsets, pa.array((pixels / 255.0).astype(np.float32)
                                                           .ravel()))
    else:
        image = pa.array([row.tobytes() for row in pixels], pa.binary())
    return pa.table({"image": image, "label": pa.array(rng.integers(0, 10, rows))})


def one(arm: str, path: str) -> dict[str, Any]:
    """Read row group 0 of ``path`` by ``arm`` in this process (a fresh one per call)."""
    from dbparallel.data.parquet_index import parquet_index
    from dbparallel.data.shard_reader import read_pieces

    (shard,) = parquet_index(path).shards("train")
    memory = ReadMemory()
    start = time.perf_counter()
    rows = 0
    if arm == "whole":
        with pa.OSFile(path) as f:
            rows = pq.ParquetFile(f).read_row_group(0, columns=["image", "label"]).num_rows
    else:
        for piece in read_pieces(shard, ["image", "label"]):
            rows += piece.table.num_rows
    seconds = time.perf_counter() - start
    return {"rows": rows, "seconds": seconds, **memory.result()}


def measure(arm: str, path: Path, repeats: int) -> dict[str, Any]:
    runs = fresh_runs(__file__, [arm, str(path)], repeats)
    return {"rows_read": runs[0]["rows"],
            "seconds": statistics.median(r["seconds"] for r in runs),
            "arrow_peak_bytes": max(r["arrow_peak_bytes"] for r in runs),
            "process_peak_bytes": max(r["process_peak_bytes"] for r in runs)}


def run(quick: bool = False) -> dict[str, Any]:
    from dbparallel.data.row_groups import PIECE_BYTES

    repeats = 1 if quick else 3
    before = load_average()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for layout in LAYOUTS:
            for size in QUICK_SIZES_MIB if quick else SIZES_MIB:
                path = Path(tmp) / "group.parquet"
                n = write(layout, size, path)
                table_bytes = pq.read_metadata(path).row_group(0).total_byte_size
                for arm in ARMS:
                    rows.append({"layout": layout, "row_group_mib": size, "rows": n,
                                 "row_group_bytes": table_bytes, "arm": arm,
                                 **measure(arm, path, repeats)})
    return {"rows": rows, "piece_bytes": PIECE_BYTES, "repeats": repeats, "quick": quick,
            "load_average_before": before, "load_average_after": load_average(),
            "machine": machine()}


def table(result: dict[str, Any]) -> str:
    lines = [f"{'layout':<23} {'MiB':>4} {'arm':<7} {'+RSS MiB':>11} {'Arrow MiB':>10} "
             f"{'seconds':>8}"]
    for r in result["rows"]:
        lines.append(f"{r['layout']:<23} {r['row_group_mib']:>4} {r['arm']:<7} "
                     f"{r['process_peak_bytes'] / 2**20:>11,.0f} "
                     f"{r['arrow_peak_bytes'] / 2**20:>10,.1f} {r['seconds']:>8.2f}")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    plot_arms(result, path, ("whole", "pieces"), "Arrow's peak while reading, MiB",
              "Reading one Parquet row group: whole, or a few MiB at a time")


def plot_arms(result: dict[str, Any], path: Path, arms: tuple[str, str], memory_label: str,
              title: str) -> None:
    """Arrow's peak and seconds against row-group size, per layout, for two arms (the first
    dashed): the plot of this benchmark and of parquet_write.py."""
    import matplotlib.pyplot as plt

    fig, (mem, sec) = plt.subplots(1, 2, figsize=(11, 4))
    for layout, color in zip(LAYOUTS, ("C0", "C1", "C2"), strict=True):
        for arm, style in zip(arms, ("o--", "o-"), strict=True):
            mine = [r for r in result["rows"] if r["layout"] == layout and r["arm"] == arm]
            if not mine:
                continue
            x = [r["row_group_mib"] for r in mine]
            mem.plot(x, [r["arrow_peak_bytes"] / 2**20 for r in mine], style, color=color,
                     label=f"{layout}, {arm}")
            sec.plot(x, [r["seconds"] for r in mine], style, color=color,
                     label=f"{layout}, {arm}")
    mem.set_ylabel(memory_label)
    sec.set_ylabel("seconds")
    for ax in (mem, sec):
        ax.set_xlabel("row group, MiB of pixels")
        ax.set_xscale("log", base=2)
    mem.set_yscale("log")
    mem.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    if sys.argv[1:2] == ["--one"]:
        print(json.dumps(one(sys.argv[2], sys.argv[3])))
        return
    args = parser(__doc__.splitlines()[0], timed=True).parse_args()
    settle(args, "parquet_read")
    finish("parquet_read", run(args.quick), args, table, plot)


if __name__ == "__main__":
    main()
