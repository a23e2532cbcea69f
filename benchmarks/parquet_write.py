"""Writing one Parquet row group: handed to Arrow's writer as one chunk, or in pieces.

``dbparallel data reshard`` and the built-in data caches write row groups of image lists.
Arrow's Parquet writer converts a table a chunk at a time, with repetition and definition
levels and values for every list element; handed a row group as one chunk (what
``combine_chunks`` makes), it holds that conversion for the whole row group at once.
``dbparallel.data.row_groups.in_pieces`` hands the same rows over in chunks of about
``PIECE_BYTES`` (slices, nothing copied): the same rows and row groups, data pages split
elsewhere. Per layout and row-group size, each arm runs in a fresh process that builds the
table and then writes it: what the write adds to the process's resident memory at its peak
(Linux: VmHWM, reset before the write, less VmRSS before it), Arrow's own peak (its memory
pool: the writer's encoded pages, kept until a column chunk ends, are outside it, so the
process figure is the one to read), seconds (median of repeats) and the file's size. Layouts
as in parquet_read.py.

    python benchmarks/parquet_write.py [--quick] [--json] [--wait-idle MINUTES]
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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
from benchmarks.parquet_read import (  # noqa: E402
    LAYOUTS,
    QUICK_SIZES_MIB,
    SIZES_MIB,
    group_table,
    plot_arms,
)

ARMS = ("one chunk", "pieces")


def one(arm: str, layout: str, mib: int, path: str) -> dict[str, Any]:
    """Write one row group of ``layout`` by ``arm`` in this process (a fresh one per call)."""
    from dbparallel.data.row_groups import in_pieces

    table = group_table(layout, mib)  # one chunk, as combine_chunks leaves it
    memory = ReadMemory()
    start = time.perf_counter()
    rows = in_pieces(table) if arm == "pieces" else table
    pq.write_table(rows, path, row_group_size=table.num_rows)
    seconds = time.perf_counter() - start
    written = pq.ParquetFile(path).metadata
    assert written.num_row_groups == 1 and written.num_rows == table.num_rows
    return {"rows": table.num_rows, "table_bytes": table.nbytes, "seconds": seconds,
            "file_bytes": os.path.getsize(path), **memory.result()}


def measure(arm: str, layout: str, mib: int, path: Path, repeats: int) -> dict[str, Any]:
    runs = fresh_runs(__file__, [arm, layout, str(mib), str(path)], repeats)
    return {"rows": runs[0]["rows"], "table_bytes": runs[0]["table_bytes"],
            "file_bytes": runs[0]["file_bytes"],
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
                for arm in ARMS:
                    rows.append({"layout": layout, "row_group_mib": size, "arm": arm,
                                 **measure(arm, layout, size, Path(tmp) / "g.parquet",
                                           repeats)})
    return {"rows": rows, "piece_bytes": PIECE_BYTES, "repeats": repeats, "quick": quick,
            "load_average_before": before, "load_average_after": load_average(),
            "machine": machine()}


def table(result: dict[str, Any]) -> str:
    lines = [f"{'layout':<23} {'MiB':>4} {'arm':<9} {'+RSS MiB':>9} {'Arrow MiB':>10} "
             f"{'seconds':>8} {'file MiB':>9}"]
    for r in result["rows"]:
        lines.append(f"{r['layout']:<23} {r['row_group_mib']:>4} {r['arm']:<9} "
                     f"{r['process_peak_bytes'] / 2**20:>9,.0f} "
                     f"{r['arrow_peak_bytes'] / 2**20:>10,.1f} {r['seconds']:>8.2f} "
                     f"{r['file_bytes'] / 2**20:>9,.1f}")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    plot_arms(result, path, ARMS, "Arrow's peak while writing, MiB",
              "Writing one Parquet row group: as one chunk, or a few MiB at a time")


def main() -> None:
    if sys.argv[1:2] == ["--one"]:
        arm, layout, mib, path = sys.argv[2:6]
        print(json.dumps(one(arm, layout, int(mib), path)))
        return
    args = parser(__doc__.splitlines()[0], timed=True).parse_args()
    settle(args, "parquet_write")
    finish("parquet_write", run(args.quick), args, table, plot)


if __name__ == "__main__":
    main()
