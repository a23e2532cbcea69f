"""The validation pass: in the driver against Ray tasks, rows/s, side by side in one run.

``dbparallel train`` checks every row once before training (``data.validate``). Local mode
checks in its own process, with one decode thread per core; a Ray run checks in Ray tasks of
one CPU each, a unit of whole shards (``UNIT_ROWS``) per task, spread over the cluster
(runtime/data_check_ray.py). Here the cluster is a private local instance with this machine's
cores, so the Ray arm can use no more CPUs than the driver; on a cluster it uses every node's.
Per data set: rows/s of each arm (median of repeats; starting Ray is not timed) and their
ratio. Data: uint8 pixel lists (decoding is a copy, one thread in the driver) and PNG images
(decoded by Pillow, on every core in the driver too).

    python benchmarks/data_check.py [--quick] [--json] [--wait-idle MINUTES]
"""

from __future__ import annotations

import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import finish, load_average, machine, parser, settle  # noqa: E402

# (name, rows, quick rows, side, channels)
DATA = [("uint8 pixels 1x28x28", 262_144, 8_192, 28, 1), ("PNG 3x32x32", 131_072, 4_096, 32, 3)]


def write(name: str, rows: int, side: int, channels: int, folder: Path) -> None:
    """``rows`` rows in row groups of 4,096, 8 row groups a file."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i, start in enumerate(range(0, rows, 32_768)):
        n = min(32_768, rows - start)
        if name.startswith("PNG"):
            blobs = []
            for _ in range(n):
                small = rng.integers(0, 256, (side // 4, side // 4, channels), dtype=np.uint8)
                out = io.BytesIO()
                Image.fromarray(small).resize((side, side)).save(out, "PNG")
                blobs.append(out.getvalue())
            image = pa.array(blobs, pa.binary())
        else:
            pixels = rng.integers(0, 256, (n, channels * side * side), dtype=np.uint8)
            image = pa.FixedSizeListArray.from_arrays(pa.array(pixels.ravel()), pixels.shape[1])
        pq.write_table(pa.table({"image": image, "label": pa.array(rng.integers(0, 10, n))}),
                       folder / f"part-{i:05d}.parquet", row_group_size=4096)


def run(quick: bool = False) -> dict[str, Any]:
    import ray

    from dbparallel.config import load_config
    from dbparallel.data.parquet_index import parquet_index
    from dbparallel.runtime.data_check_ray import ray_units
    from dbparallel.training.data_check import UNIT_ROWS, check_data, check_units

    cores = os.cpu_count() or 1
    repeats = 1 if quick else 3
    before = load_average()
    rows_out = []
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started = time.perf_counter()
    ray.init(address="local", num_cpus=cores, include_dashboard=False, logging_level="ERROR",
             log_to_driver=False)
    ray_start_s = time.perf_counter() - started
    try:
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["DBPARALLEL_CACHE"] = str(Path(tmp) / "cache")
            for name, rows, quick_rows, side, channels in DATA:
                n = quick_rows if quick else rows
                folder = Path(tmp) / name.split()[0]
                write(name, n, side, channels, folder)
                cfg = load_config([], [f"data.path={folder}", "data.source=parquet",
                                       f"data.image_size={side}", f"data.channels={channels}"])
                index = parquet_index(str(folder))
                unit_rows = 2048 if quick else UNIT_ROWS
                units = check_units(index, unit_rows)
                arms = {"driver": None, "ray tasks": ray_units(cfg, index)}
                rates = {}
                for arm, runner in arms.items():
                    times = [check_data(cfg, index, force=True, progress=False, run=runner,
                                        unit_rows=unit_rows).seconds for _ in range(repeats)]
                    rates[arm] = n / statistics.median(times)
                for arm, rate in rates.items():
                    rows_out.append({"data": name, "rows": n, "units": len(units), "arm": arm,
                                     "rows_per_s": rate,
                                     "over_driver": rate / rates["driver"]})
    finally:
        ray.shutdown()
    return {"rows": rows_out, "cores": cores, "repeats": repeats, "quick": quick,
            "unit_rows": UNIT_ROWS, "ray_start_s": ray_start_s,
            "load_average_before": before, "load_average_after": load_average(),
            "machine": machine()}


def table(result: dict[str, Any]) -> str:
    lines = [f"{'data':<22} {'rows':>8} {'units':>5} {'arm':<10} {'rows/s':>10} "
             f"{'x driver':>8}"]
    for r in result["rows"]:
        lines.append(f"{r['data']:<22} {r['rows']:>8,} {r['units']:>5} {r['arm']:<10} "
                     f"{r['rows_per_s']:>10,.0f} {r['over_driver']:>8.2f}")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["data"] for r in result["rows"]))
    fig, ax = plt.subplots(figsize=(6, 4))
    width = 0.38
    for k, arm in enumerate(("driver", "ray tasks")):
        rates = [next(r["rows_per_s"] for r in result["rows"]
                      if r["data"] == name and r["arm"] == arm) for name in names]
        ax.bar([i + (k - 0.5) * width for i in range(len(names))], rates, width, label=arm)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("rows checked per second")
    ax.set_yscale("log")
    ax.set_title(f"The validation pass on {result['cores']} cores")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    args = parser(__doc__.splitlines()[0], timed=True).parse_args()
    settle(args, "data_check")
    finish("data_check", run(args.quick), args, table, plot)


if __name__ == "__main__":
    main()
