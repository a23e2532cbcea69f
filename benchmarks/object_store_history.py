"""A block's metrics.jsonl in an object store: uploaded at every line, or with checkpoints.

An object store has no append, so a block's history (training/history.py) is rewritten whole.
Two arms train the same block (jobs/tiny_cpu.yaml, block 0, a line every step, one
checkpoint at the end) with its run directory in an S3-compatible server (moto, on this
machine) behind a proxy that delays every request by ``--rtt-ms`` (the SlowLink of
object_store_read.py), side by side in this process:

- ``every line``: the history uploaded at each line, its lease checked (read, then written)
  before each (``history.UPLOAD_EVERY_S = 0``: how every block wrote before);
- ``with checkpoints``: uploaded at most every ``UPLOAD_EVERY_S`` (30 s), at each checkpoint
  and the last step, its lease checked only then.

Per arm: seconds for the steps (the block's start and first step left out), the requests its
storage made (reads, writes, listings, existence checks) and the bytes of metrics.jsonl it
uploaded. The steps themselves are the same in both: what differs is time the device waits.

    python benchmarks/object_store_history.py [--quick] [--json] [--rtt-ms MS]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    finish,
    load_average,
    machine,
    parser,
    s3_server,
    settle,
)
from benchmarks.object_store_read import SlowLink  # noqa: E402

ARMS = ("every line", "with checkpoints")
ROOT = Path(__file__).resolve().parents[1]


def counted_storage(uri: str) -> Any:
    """A Storage of ``uri`` that counts its requests and the bytes of metrics.jsonl written."""
    from dbparallel.training.history import metrics_file
    from dbparallel.training.storage import Storage

    class Counted(Storage):
        def __init__(self, root: str):
            super().__init__(root)
            self.requests, self.history_bytes = 0, 0

        def write_bytes(self, rel: str, data: bytes) -> None:
            self.requests += 1
            if rel == metrics_file(0):
                self.history_bytes += len(data)
            super().write_bytes(rel, data)

        def read_bytes(self, rel: str) -> bytes:
            self.requests += 1
            return super().read_bytes(rel)

        def exists(self, rel: str) -> bool:
            self.requests += 1
            return super().exists(rel)

        def listdir(self, rel: str) -> list[str]:
            self.requests += 1
            return super().listdir(rel)

    return Counted(uri)


def one(arm: str, uri: str, steps: int) -> dict[str, Any]:
    """Train block 0 for ``steps`` steps (a line each) into the run directory ``uri``."""
    import torch

    from dbparallel.config import DataConfig, load_config
    from dbparallel.data.sources import open_data
    from dbparallel.training import history
    from dbparallel.training.loop import BlockRun

    torch.set_num_threads(1)
    history.UPLOAD_EVERY_S = 0.0 if arm == "every line" else 30.0
    cfg = load_config([ROOT / "jobs" / "tiny_cpu.yaml"],
                      [f"run.dir={uri}", f"train.steps={steps}", "train.log_every=1",
                       f"train.checkpoint_every={steps}", "train.heldout_every=0"])
    storage = counted_storage(uri)
    run = BlockRun(cfg, 0, open_data(DataConfig()), storage, session=arm.replace(" ", "-"))
    run.train_until(1)  # the start, compiling nothing, and the first step: left out
    storage.requests, storage.history_bytes = 0, 0
    start = time.perf_counter()
    run.train_until(steps)
    seconds = time.perf_counter() - start
    run.close()
    lines = steps - 1
    return {"arm": arm, "steps": lines, "seconds": seconds, "ms_per_step": 1e3 * seconds / lines,
            "requests": storage.requests, "history_bytes": storage.history_bytes}


def run(quick: bool = False, rtt_ms: float = 20.0) -> dict[str, Any]:
    steps = 60 if quick else 300
    before = load_average()
    os.environ.setdefault("DBPARALLEL_CACHE", tempfile.mkdtemp(prefix="dbparallel-bench-"))
    with s3_server("runs") as (host, port):
        link = SlowLink((host, port), rtt_ms / 1000, 100e6)
        rows = []
        for arm in ARMS:
            uri = (f"s3://runs/{arm.replace(' ', '-')}?endpoint_override=127.0.0.1:{link.port}"
                   f"&scheme=http&region=us-east-1")
            rows.append(one(arm, uri, steps))
    return {"rows": rows, "rtt_ms": rtt_ms, "quick": quick, "load_average_before": before,
            "load_average_after": load_average(), "machine": machine()}


def table(result: dict[str, Any]) -> str:
    lines = [f"a line every step, rtt {result['rtt_ms']:g} ms",
             f"{'arm':<18} {'steps':>5} {'ms/step':>8} {'requests':>9} {'history KiB':>12}"]
    for r in result["rows"]:
        lines.append(f"{r['arm']:<18} {r['steps']:>5} {r['ms_per_step']:>8.1f} "
                     f"{r['requests']:>9,} {r['history_bytes'] / 1024:>12,.0f}")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(10, 3.2))
    names = [r["arm"] for r in result["rows"]]
    for ax, key, label, scale in ((axes[0], "ms_per_step", "ms per step", 1),
                                  (axes[1], "requests", "storage requests", 1),
                                  (axes[2], "history_bytes", "metrics.jsonl KiB uploaded",
                                   1024)):
        ax.bar(names, [r[key] / scale for r in result["rows"]])
        ax.set_ylabel(label)
    fig.suptitle(f"A block's history in an object store ({result['rows'][0]['steps']} steps, "
                 f"a line each, {result['rtt_ms']:g} ms a request)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    p = parser(__doc__.splitlines()[0], timed=True)
    p.add_argument("--rtt-ms", type=float, default=20.0)
    args = p.parse_args()
    settle(args, "object_store_history")
    finish("object_store_history", run(args.quick, args.rtt_ms), args, table, plot)


if __name__ == "__main__":
    main()
