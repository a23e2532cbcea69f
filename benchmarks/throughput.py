"""Training throughput: one block actor alone against B block actors at once (docs/performance.md).

Real Ray actors on a private local instance run the block actor's path: the data index
pinned in the run directory, a ``BlockRun`` streaming its own order of the data files (a
window of shards at a time, the next one read ahead in a thread), then per step
``BlockRun.batch`` and ``BlockTrainer.train_step``, with the batch fetch and the step timed
apart. On CPU each actor gets one core and one torch thread (a fraction of a core when B
exceeds the cores); with enough GPUs each gets its own. Reported per B: one block alone, B
blocks at once (aggregate samples/s from a common start to the last finish), scaling
efficiency = aggregate / (B x single), the share of step time spent getting the batch from
the stream (``data_share``: waiting for a window, taking the batch's rows, decoding them), and
the end-to-end model on the same hardware (one actor holding every core). With 2 or more GPUs
the end-to-end model also trains data-parallel through Ray Train's TorchTrainer on those GPUs,
each worker streaming the data in its own order (data_parallel.py).

``first_batch_s`` (per B, the slowest actor) replaces ``dataset_read_s``: there is no
materialized dataset to read any more; it is the cold start of an actor's stream (reading the
pinned index, the first window of shards from the files, decoding the first batch), in a fresh
actor process, so it includes the first use of the Parquet reader.

    python benchmarks/throughput.py [--quick] [--json] [--wait-idle MINUTES]
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    IDLE_LOAD,
    finish,
    load_average,
    machine,
    parser,
    settle,
)
from benchmarks.data_parallel import data_parallel_e2e  # noqa: E402
from dbparallel.config import (  # noqa: E402
    Config,
    ModelConfig,
    RunConfig,
    TrainConfig,
)
from dbparallel.data.shards import DataIndex  # noqa: E402
from dbparallel.data.sources import open_data  # noqa: E402
from dbparallel.training.data_pin import pin_data, run_data  # noqa: E402
from dbparallel.training.loop import BlockRun  # noqa: E402
from dbparallel.training.run_dir import open_run  # noqa: E402
from dbparallel.training.storage import Storage  # noqa: E402

SETUP = "DiT hidden 128, 4 heads, patch 2, depth 12, batch 64, on the embedded digits (8x8x1)"
TIMEOUT_S = 900  # no ray.get waits forever: a pending actor would hang the benchmark


def config(blocks: int, run_dir: str, depth: int = 12, batch: int = 64, preset: str = "small",
           end_to_end: bool = False) -> Config:
    """The DiT of the benchmark cut into ``blocks`` blocks, or trained end to end."""
    return Config(task="dit", run=RunConfig(name="throughput-bench", dir=run_dir),
                  model=ModelConfig(preset=preset, blocks=1 if end_to_end else blocks,
                                    depth=depth, patch_size=2),
                  train=TrainConfig(batch_size=batch, warmup_steps=0,
                                    objective="end_to_end" if end_to_end else "diffusionblocks"))


def prepare_run_dir(cfg: Config, index: DataIndex) -> None:
    """Write the config and pin the data in ``cfg``'s run directory, as a run's driver does."""
    pin_data(open_run(cfg), index)


class TimedBlock:
    """The block actor's training path with the batch fetch and the step timed apart."""

    def __init__(self, cfg: Config, block: int, threads: int, device: str):
        torch.set_num_threads(threads)
        self.device = device
        storage = Storage(cfg.run_dir)
        start = time.perf_counter()
        index = run_data(cfg, storage)  # the index the driver pinned, as BlockActor reads it
        index_s = time.perf_counter() - start
        self.run = BlockRun(cfg, block, index, storage, device)
        start = time.perf_counter()
        self.run.batch(self.run.trainer.step)  # cold stream: first window read and decoded
        self._sync()
        self.first_batch_s = index_s + time.perf_counter() - start  # once per actor

    def _sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def warm_up(self, steps: int, threads: int | None = None) -> None:
        if threads:
            torch.set_num_threads(threads)
        for _ in range(steps):
            self.run.trainer.train_step(self.run.batch(self.run.trainer.step))
        self._sync()

    def timed(self, steps: int, start_at: float) -> dict[str, float]:
        """``steps`` steps from the common wall-clock instant ``start_at``."""
        time.sleep(max(0.0, start_at - time.time()))
        start, data_s, step_s, samples = time.time(), 0.0, 0.0, 0
        for _ in range(steps):
            t0 = time.perf_counter()
            batch = self.run.batch(self.run.trainer.step)
            self._sync()
            t1 = time.perf_counter()
            samples += self.run.trainer.train_step(batch).samples
            self._sync()
            data_s, step_s = data_s + t1 - t0, step_s + time.perf_counter() - t1
        return {"start": start, "end": time.time(), "samples": samples, "data_s": data_s,
                "step_s": step_s, "first_batch_s": self.first_batch_s}


def start_actors(cfg: Config, blocks: list[int], cpus: float, threads: int, gpus: float,
                 warmup: int) -> list[Any]:
    """One warmed-up actor per block of ``blocks``, each reserving ``cpus`` and ``gpus``; they
    stream the data pinned in ``cfg``'s run directory."""
    device = "cuda" if gpus else "cpu"
    actors = [ray.remote(TimedBlock).options(num_cpus=cpus, num_gpus=gpus)
              .remote(cfg, b, threads, device) for b in blocks]
    ray.get([a.warm_up.remote(warmup) for a in actors], timeout=TIMEOUT_S)
    return actors


def time_together(actors: list[Any], steps: int) -> dict[str, float]:
    """``actors`` training at once from a common start: aggregate samples/s to the last
    finish, mean share of time spent getting batches from the stream, mean step time, and the
    slowest cold start of a stream."""
    start_at = time.time() + 0.5  # every actor is idle and ready; start them together
    rows = ray.get([a.timed.remote(steps, start_at) for a in actors], timeout=TIMEOUT_S)
    wall = max(r["end"] for r in rows) - start_at
    return {"samples_per_s": sum(r["samples"] for r in rows) / wall,
            "data_share": sum(r["data_s"] / (r["data_s"] + r["step_s"]) for r in rows) / len(rows),
            "step_s": sum(r["step_s"] for r in rows) / (len(rows) * steps),
            "first_batch_s": max(r["first_batch_s"] for r in rows)}


def stop(actors: list[Any]) -> None:
    for a in actors:
        ray.kill(a)


def connect() -> None:
    """A private local Ray instance (never one started by someone else on this machine)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", include_dashboard=False, object_store_memory=256 * 2**20,
             logging_level="ERROR", log_to_driver=False)


def run(quick: bool = False, blocks: tuple[int, ...] | None = None, depth: int = 12,
        batch: int = 64, preset: str = "small", steps: int | None = None,
        warmup: int = 2, data_parallel_on_cpu: bool = False) -> dict[str, Any]:
    """One row per B; every number from one private Ray instance, measured in one go."""
    blocks = blocks or ((2,) if quick else (2, 3, 4))
    steps = steps or (5 if quick else 40)
    load_before = load_average()
    connected = not ray.is_initialized()
    if connected:
        connect()
    try:
        res = ray.cluster_resources()
        cores, gpus = int(res.get("CPU", 1)), int(res.get("GPU", 0))
        with tempfile.TemporaryDirectory() as runs:
            def cfg(b: int, e2e: bool = False) -> Config:
                """The config of one measurement, in a run directory of its own."""
                name = "e2e" if e2e else f"B{b}"
                return config(b, f"{runs}/{name}", depth, batch, preset, e2e)

            index = open_data(cfg(1).data)  # the cached digits shards, built before any actor
            for c in [cfg(1, True), *(cfg(b) for b in blocks)]:
                prepare_run_dir(c, index)
            # the end-to-end model in one actor holding every core, then on one thread
            actors = start_actors(cfg(1, True), [0], cores, cores, min(gpus, 1), warmup)
            try:
                e2e = time_together(actors, steps)
                ray.get(actors[0].warm_up.remote(1, threads=1), timeout=TIMEOUT_S)
                e2e_1 = time_together(actors, steps)
            finally:
                stop(actors)
            rows = []
            for b in blocks:
                # one GPU per block where there are enough, else a fair share of the cores;
                # Ray counts resources in 1e-4 units: round down so that b shares still fit
                gpu = 1 if gpus >= b else 0
                cpus = 1 if b <= cores or gpu else math.floor(cores / b * 1e4) / 1e4
                actors = start_actors(cfg(b), list(range(b)), cpus, 1, gpu, warmup)
                try:
                    single = time_together(actors[:1], steps)  # the others wait idle
                    together = time_together(actors, steps)
                finally:
                    stop(actors)
                agg = together["samples_per_s"]
                rows.append({
                    "blocks": b, "single_samples_per_s": single["samples_per_s"],
                    "aggregate_samples_per_s": agg,
                    "efficiency": agg / (b * single["samples_per_s"]),
                    "data_share": together["data_share"],
                    "e2e_samples_per_s": e2e["samples_per_s"],
                    "e2e_1core_samples_per_s": e2e_1["samples_per_s"],
                    # each block must see as many samples as the whole network does end to end
                    "speedup_vs_e2e": agg / (b * e2e["samples_per_s"]),
                    "single_data_share": single["data_share"],
                    "block_step_s": together["step_s"],
                    "first_batch_s": together["first_batch_s"],
                    "cpus_per_block": cpus, "gpus_per_block": gpu})
            if gpus >= 2 or data_parallel_on_cpu:
                dp: dict[str, Any] = data_parallel_e2e(
                    cfg(1, True), index, gpus if gpus >= 2 else cores, gpus >= 2, warmup, steps)
                dp["device"] = "gpu" if gpus >= 2 else "cpu (code-path check only)"
            else:
                dp = {"not_measured": f"needs >= 2 GPUs; this Ray instance has {gpus}"}
    finally:
        if connected:
            ray.shutdown()
    return {"rows": rows, "quick": quick, "setup": SETUP if (depth, batch, preset) ==
            (12, 64, "small") else f"DiT {preset}, depth {depth}, batch {batch}",
            "steps": steps, "warmup": warmup, "cores": cores, "gpus": gpus,
            "data_parallel_e2e": dp, "load_average_before": load_before,
            "idle_machine": load_before < IDLE_LOAD,
            "load_average_after": load_average(), "machine": machine()}


def table(result: dict[str, Any]) -> str:
    lines = [f"{result['setup']}; {result['cores']} cores, {result['gpus']} GPUs; load average "
             f"{result['load_average_before']:.2f} before, {result['load_average_after']:.2f} "
             "after",
             f"{'B':>3} {'1 block/s':>10} {'B blocks/s':>11} {'efficiency':>10} "
             f"{'data share':>10} {'e2e/s':>8} {'e2e 1 core/s':>12} {'vs e2e':>7}"]
    for r in result["rows"]:
        lines.append(f"{r['blocks']:>3} {r['single_samples_per_s']:>10.1f} "
                     f"{r['aggregate_samples_per_s']:>11.1f} {r['efficiency']:>10.2f} "
                     f"{r['data_share']:>10.2%} {r['e2e_samples_per_s']:>8.1f} "
                     f"{r['e2e_1core_samples_per_s']:>12.1f} {r['speedup_vs_e2e']:>6.2f}x")
    lines.append(f"data-parallel end to end: {result['data_parallel_e2e']}")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    rows = result["rows"]
    bs = [r["blocks"] for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.8))
    ax.plot(bs, [r["blocks"] * r["single_samples_per_s"] for r in rows], "x--", color="gray",
            label="B x one block alone (ideal)")
    ax.plot(bs, [r["aggregate_samples_per_s"] for r in rows], "o-", label="B blocks at once")
    ax.plot(bs, [r["blocks"] * r["e2e_samples_per_s"] for r in rows], "s:",
            label="end to end x B (equal work)")
    ax.set(xlabel="blocks B", ylabel="block-samples/s", xticks=bs,
           title=f"{result['cores']} CPU cores, load average {result['load_average_before']:.1f}"
                 + ("" if result["idle_machine"] else " (not idle: timings unreliable)"))
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = parser(__doc__.split("\n")[0], timed=True)
    p.add_argument("--data-parallel-on-cpu", action="store_true",
                   help="run the TorchTrainer path on CPU workers (checks the code, not a result)")
    args = p.parse_args()
    settle(args, "throughput")
    finish("throughput", run(args.quick, data_parallel_on_cpu=args.data_parallel_on_cpu),
           args, table, plot)


if __name__ == "__main__":
    main()
