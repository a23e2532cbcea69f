"""Gathering the next batch ahead: the training thread's time per batch, ahead and when due.

A block's stream (training/stream.py) gathers a batch's rows out of the window they lie in.
``ahead`` (what training does) gathers the next step's rows in a background thread while this
step trains; ``when due`` (the behaviour before, kept here by turning the ahead gather off)
gathers them in the training thread when the step asks. Each step here is a sleep of
``--step-ms`` standing for a device step (a training thread waiting for its GPU takes no CPU),
and the task's copy to the device is left out (on a CUDA device it is an asynchronous copy
from pinned memory; here it would be the CPU's conversion to floats, the same in both arms).
Measured, side by side in one run, per image size: the median time of ``batch()`` in the
training thread, and the steps/s over the run. Data: random 8-bit RGB images in one Parquet
file of many row groups (the stream's shards), read two shards to a window.

    python benchmarks/batch_ahead.py [--quick] [--json] [--wait-idle MINUTES]
"""

from __future__ import annotations

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

from benchmarks.common import finish, load_average, machine, parser, settle  # noqa: E402
from dbparallel.config import Config, DataConfig  # noqa: E402
from dbparallel.data.parquet_index import parquet_index  # noqa: E402
from dbparallel.tasks.base import Batch, Rows  # noqa: E402
from dbparallel.tasks.image_generation import ImageGeneration  # noqa: E402
from dbparallel.training.data_order import DataOrder  # noqa: E402
from dbparallel.training.stream import BlockStream  # noqa: E402

# (image side, batch rows, rows in the data, rows per shard); quick: fewer rows
SIZES = [(64, 256, 8192, 1024), (256, 64, 2048, 256)]
WINDOW_SHARDS = 2


class HostRows(ImageGeneration):
    """The image task with its rows left on the host: the device copy is not measured."""

    def to_device(self, rows: Rows, device: Any) -> Batch:
        return rows


def raw_images(side: int, rows: int, shard_rows: int, folder: Path) -> Path:
    """``rows`` random 8-bit RGB images and labels in one uncompressed Parquet file of
    ``shard_rows``-row row groups (the stream's shards)."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (rows, 3 * side * side), dtype=np.uint8)
    table = pa.table({"image": pa.FixedSizeListArray.from_arrays(pa.array(pixels.ravel()),
                                                                 pixels.shape[1]),
                      "label": pa.array(rng.integers(0, 10, rows))})
    path = folder / f"images-{side}.parquet"
    pq.write_table(table, path, row_group_size=shard_rows, compression="none")
    return path


def _arm(path: Path, side: int, batch: int, ahead: bool, steps: int, step_s: float
         ) -> dict[str, Any]:
    cfg = Config(data=DataConfig(image_size=side, channels=3, num_classes=10))
    index = parquet_index(str(path))
    order = DataOrder([s.rows for s in index.shards("train")], batch, 0, 0, WINDOW_SHARDS)
    stream = BlockStream(index, "train", order, HostRows(cfg), "cpu")
    if not ahead:
        stream._gather_ahead = lambda step: None  # type: ignore[method-assign]
    stream.batch(0)  # the first window is read before training starts
    times, checksum = [], 0
    start = time.perf_counter()
    for step in range(1, steps + 1):
        t = time.perf_counter()
        rows = stream.batch(step)
        times.append(time.perf_counter() - t)
        # both arms must see the same rows: labels and each row's first pixels
        checksum += int(rows["label"].sum()) + int(rows["image"][:, :64].sum())
        del rows
        time.sleep(step_s)
    wall = time.perf_counter() - start
    stream.close()
    return {"side": side, "batch": batch, "batch_bytes": batch * (3 * side * side + 8),
            "arm": "ahead" if ahead else "when due", "steps": steps,
            "batch_ms_median": 1e3 * statistics.median(times),
            "batch_ms_p90": 1e3 * float(np.percentile(times, 90)),
            "steps_per_s": steps / wall, "step_ms": 1e3 * step_s, "checksum": checksum}


def run(quick: bool = False, step_ms: float = 30.0,
        sizes: list[tuple[int, int, int, int]] = SIZES) -> dict[str, Any]:
    before = load_average()
    out = []
    with tempfile.TemporaryDirectory() as folder:
        for side, batch, rows, shard_rows in sizes:
            rows, steps = (rows // 4, 20) if quick else (rows, 60)
            path = raw_images(side, rows, shard_rows // (4 if quick else 1), Path(folder))
            for ahead in (False, True):
                out.append(_arm(path, side, batch, ahead, steps, step_ms / 1e3))
    return {"rows": out, "quick": quick, "window_shards": WINDOW_SHARDS,
            "load_average_before": before, "load_average_after": load_average(),
            "machine": machine()}


def table(result: dict[str, Any]) -> str:
    lines = [f"{'image':>9} {'batch':>5} {'MiB':>6} {'arm':>9} {'batch() ms':>10} "
             f"{'p90 ms':>7} {'steps/s':>8}"]
    for r in result["rows"]:
        lines.append(f"{r['side']:>4}x{r['side']:<4} {r['batch']:>5} "
                     f"{r['batch_bytes'] / 2**20:>6.1f} {r['arm']:>9} "
                     f"{r['batch_ms_median']:>10.2f} {r['batch_ms_p90']:>7.2f} "
                     f"{r['steps_per_s']:>8.2f}")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    labels = [f"{r['side']}x{r['side']} x{r['batch']}\n{r['arm']}" for r in result["rows"]]
    ax.bar(labels, [r["batch_ms_median"] for r in result["rows"]],
           color=["tab:gray" if r["arm"] == "when due" else "tab:blue"
                  for r in result["rows"]])
    ax.set_ylabel("training thread's ms in batch() (median)")
    ax.set_title(f"Gathering the next batch ahead ({result['rows'][0]['step_ms']:g} ms steps)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    p = parser(__doc__.splitlines()[0], timed=True)
    p.add_argument("--step-ms", type=float, default=30.0, help="the device step a sleep stands for")
    args = p.parse_args()
    settle(args, "batch_ahead")
    finish("batch_ahead", run(args.quick, args.step_ms), args, table, plot)


if __name__ == "__main__":
    main()
