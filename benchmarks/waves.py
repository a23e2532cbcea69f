"""More blocks than room: B=4 in waves of 2 against B=4 at once, full runs on one Ray instance.

Both arms run ``dbparallel train``'s Ray path (run_ray) on the same private local instance:
the same recipe, the same steps, each block one torch thread. At once, the 4 block actors share
the cores (``runtime.cpus_per_block`` = cores / 4); in waves, 2 actors hold a core's share of
cores / 2 each and blocks 2 and 3 start when 0 and 1 finish (``runtime.max_concurrent_blocks=2``).
Reported per arm: the training span (first block start to last block finish, from report.json's
schedule), samples/s over it (every block's samples), each block's start and finish, and
whether every block's final weights equal the other arm's (they must: a block's training does
not depend on when it runs). ``waves_vs_at_once`` is the ratio of samples/s.

    python benchmarks/waves.py [--quick] [--json] [--wait-idle MINUTES]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import ray
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import finish, load_average, machine, parser, settle  # noqa: E402
from dbparallel.config import load_config  # noqa: E402
from dbparallel.runtime.launch import run_ray  # noqa: E402

BLOCKS, SLOTS = 4, 2
RECIPE = Path(__file__).resolve().parents[1] / "jobs" / "tiny_cpu.yaml"


def arm(run_dir: str, cores: int, slots: int, steps: int) -> dict[str, Any]:
    """One full run; the schedule and throughput from its report."""
    cfg = load_config([RECIPE], [
        f"run.dir={run_dir}", f"model.blocks={BLOCKS}", f"model.depth={2 * BLOCKS}",
        "model.hidden=64", f"train.steps={steps}", f"train.checkpoint_every={steps}",
        f"train.log_every={max(1, steps // 4)}", f"runtime.max_concurrent_blocks={slots}",
        f"runtime.cpus_per_block={cores / slots:.4f}", "sample.per_class=1", "metrics.port=0"])
    report = run_ray(cfg, None, progress=False)
    rows = report["per_block"]
    span = max(r["finished_s"] for r in rows) - min(r["started_s"] for r in rows)
    samples = sum(r["steps"] for r in rows) * cfg.train.batch_size
    return {"concurrent_blocks": report["concurrent_blocks"], "training_span_s": span,
            "samples_per_s": samples / span,
            "schedule": [{k: r[k] for k in ("block", "slot", "started_s", "finished_s")}
                         for r in rows],
            "wall_time_s": report["wall_time_s"], "batch_size": cfg.train.batch_size}


def same_weights(a: str, b: str, steps: int) -> bool:
    for block in range(BLOCKS):
        name = f"blocks/block_{block}/snapshot_{steps:08d}.pt"
        x = torch.load(Path(a) / name, weights_only=True)["ema"]
        y = torch.load(Path(b) / name, weights_only=True)["ema"]
        if not all(torch.equal(x[k], y[k]) for k in x):
            return False
    return True


def compare(runs: str, cores: int, steps: int) -> dict[str, Any]:
    """Both arms on the connected instance, run directories under ``runs``."""
    at_once = arm(f"{runs}/at_once", cores, BLOCKS, steps)
    waves = arm(f"{runs}/waves", cores, SLOTS, steps)
    return {"blocks": BLOCKS, "slots": SLOTS, "steps": steps, "at_once": at_once,
            "waves": waves, "waves_vs_at_once": waves["samples_per_s"] / at_once["samples_per_s"],
            "same_final_weights": same_weights(f"{runs}/at_once", f"{runs}/waves", steps)}


def run(quick: bool = False) -> dict[str, Any]:
    steps = 20 if quick else 300
    before = load_average()
    ray.init(address="local", include_dashboard=False, logging_level="ERROR",
             log_to_driver=False)
    try:
        cores = int(ray.cluster_resources().get("CPU", 1))
        with tempfile.TemporaryDirectory() as runs:
            result = compare(runs, cores, steps)
    finally:
        ray.shutdown()
    return {**result, "cores": cores, "quick": quick, "load_average_before": before,
            "load_average_after": load_average(), "machine": machine()}


def comparison_lines(result: dict[str, Any]) -> list[str]:
    """The two arms and their ratio, from ``compare``'s result."""
    lines = []
    for name in ("at_once", "waves"):
        r = result[name]
        lines.append(f"{name:>8}: {r['concurrent_blocks']} at once, training span "
                     f"{r['training_span_s']:.1f} s, {r['samples_per_s']:,.0f} samples/s")
    lines.append(f"waves / at once = {result['waves_vs_at_once']:.3f}; same final weights: "
                 f"{result['same_final_weights']}")
    return lines


def table(result: dict[str, Any]) -> str:
    return "\n".join([f"B={result['blocks']} on {result['cores']} cores, {result['steps']} "
                      f"steps per block; load average {result['load_average_before']:.2f} "
                      "before", *comparison_lines(result)])


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), width_ratios=[3, 1])
    for y, name in enumerate(("waves", "at_once")):
        for row in result[name]["schedule"]:
            axes[0].barh(y + 0.2 * row["slot"] - 0.3, row["finished_s"] - row["started_s"],
                         left=row["started_s"], height=0.18, color=f"C{row['block']}")
            axes[0].text(row["started_s"], y + 0.2 * row["slot"] - 0.3, f" block {row['block']}",
                         va="center", fontsize=7)
    axes[0].set_yticks([0, 1], ["waves of 2", "4 at once"])
    axes[0].set_xlabel("seconds since the run started")
    axes[0].set_title("when each block trained")
    axes[1].bar(["4 at once", "waves of 2"],
                [result["at_once"]["samples_per_s"], result["waves"]["samples_per_s"]])
    axes[1].set_ylabel("samples/s (all blocks)")
    fig.suptitle(f"B=4 on {result['cores']} cores: waves / at once = "
                 f"{result['waves_vs_at_once']:.2f}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = parser(__doc__.splitlines()[0], timed=True)
    args = p.parse_args()
    settle(args, "waves")
    finish("waves", run(args.quick), args, table, plot)


if __name__ == "__main__":
    main()
