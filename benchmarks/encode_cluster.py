"""``data encode`` as Ray tasks against one process: rows/s on this machine's cores.

The same Parquet file of JPEG photos (``encode_ahead.photos``) is encoded by the same small
convolutional encoder (``encode_ahead.conv_encoder``) into files of 512 rows, pair by pair:
in one process (the single pass, ``reshard`` with the encoder: its decoding and torch take
every core) and as one Ray task per file on a private local Ray instance of this machine's
cores (``dbparallel.encode`` in a process that joined it: each task one CPU, one thread),
each the median of repeats after a warm-up that starts the tasks' workers. Both write the
same rows (checked). A cluster's nodes add more tasks; this measures what the tasks cost and
give on one machine.

    python benchmarks/encode_cluster.py [--quick] [--json] [--wait-idle MINUTES]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import finish, load_average, machine, parser, settle  # noqa: E402
from benchmarks.encode_ahead import SIDE, conv_encoder, photos  # noqa: E402

SHARD_ROWS = 32  # 16 row groups of 32 rows: 512 rows to a file, one task each
BATCH = 32


def run(quick: bool = False) -> dict[str, Any]:
    import os

    import ray

    import dbparallel
    from dbparallel.config import DataConfig
    from dbparallel.data.latent_encoding import Encode, LatentEncoder
    from dbparallel.data.parquet_index import parquet_index
    from dbparallel.data.reshard import reshard

    rows, repeats = (1024, 2) if quick else (2048, 5)
    cores = os.cpu_count() or 1
    before = load_average()
    encoder = conv_encoder()
    data = DataConfig(image_size=SIDE, channels=3, num_classes=10, shard_rows=SHARD_ROWS)
    keys = {"data.image_size": SIDE, "data.channels": 3, "data.num_classes": 10,
            "data.shard_rows": SHARD_ROWS}
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "photos"
        source.mkdir()
        photos(source, rows)
        written: dict[str, Any] = {}

        def one_process(out: str) -> None:
            reshard(parquet_index(str(source)), out, SHARD_ROWS,
                    rewrite=Encode(data, LatentEncoder(encoder, "conv", "cpu", BATCH)))

        def tasks(out: str) -> None:
            dbparallel.encode(source, encoder, out, overrides=keys, batch=BATCH,
                              progress=False)

        def seconds(way: str, write: Any) -> float:
            with tempfile.TemporaryDirectory() as out:
                start = time.perf_counter()
                write(f"{out}/x")
                took = time.perf_counter() - start
                written[way] = pq.read_table(f"{out}/x")
                return took

        ray.init(num_cpus=cores, include_dashboard=False, logging_level="ERROR",
                 log_to_driver=False)
        try:
            seconds("tasks", tasks)  # warm-up: the tasks' workers start
            times: dict[str, list[float]] = {"one process": [], "tasks": []}
            for _ in range(repeats):  # pair by pair: a slow spell hits both ways
                times["one process"].append(seconds("one process", one_process))
                times["tasks"].append(seconds("tasks", tasks))
        finally:
            ray.shutdown()
        same = written["one process"].equals(written["tasks"])
    result_rows = [{"way": way, "rows": rows, "files": -(-rows // (16 * SHARD_ROWS)),
                    "rows_per_s": rows / statistics.median(t), "seconds": t}
                   for way, t in times.items()]
    base = result_rows[0]["rows_per_s"]
    for r in result_rows:
        r["speedup"] = r["rows_per_s"] / base
    return {"rows": result_rows, "same_rows_written": same, "cores": cores,
            "repeats": repeats, "quick": quick, "side": SIDE, "batch": BATCH,
            "load_average_before": before, "load_average_after": load_average(),
            "machine": machine()}


def table(result: dict[str, Any]) -> str:
    lines = [f"{'way':<12} {'rows':>5} {'files':>5} {'rows/s':>8} {'speedup':>8}"]
    for r in result["rows"]:
        lines.append(f"{r['way']:<12} {r['rows']:>5} {r['files']:>5} {r['rows_per_s']:>8,.0f} "
                     f"{r['speedup']:>8.2f}")
    lines.append(f"same rows written: {result['same_rows_written']}")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    ax.bar([r["way"] for r in result["rows"]], [r["rows_per_s"] for r in result["rows"]])
    ax.set_ylabel("rows/s")
    ax.set_title(f"data encode, {result['side']}px JPEG ({result['cores']} cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    args = parser(__doc__.splitlines()[0], timed=True).parse_args()
    settle(args, "encode_cluster")
    finish("encode_cluster", run(args.quick), args, table, plot)


if __name__ == "__main__":
    main()
