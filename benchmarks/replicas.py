"""Filling a cluster: one block on R=1 and R=2 workers, and B=4 in waves of 2 against B=4 at
once, side by side in one run on one Ray instance (docs/cluster.md).

Replicas: the same block (model.blocks=1) trained by ``dbparallel train``'s Ray path twice,
once as one block actor with one worker's resources (runtime.cpus_per_block, or one GPU with
``--gpus``), once as a Ray Train group of two such workers (runtime.replicas_per_block=2), with
the same global batch. The block's rate is the median samples/s of its metrics.jsonl lines
after the first (rank 0 times each step including its wait for the all-reduce), so startup,
Ray Train's group set-up and the first measured step are left out. ``efficiency`` =
samples/s(R=2) / (2 x samples/s(R=1)): 1.0 means a second worker doubles the block's rate.
On CPUs each worker holds one core with one torch thread; gradients travel by gloo.

Waves: benchmarks/waves.py's two arms (every block's samples over the training span), with
whether every block's final weights are equal in both.

``--quick`` checks that the script works and gives a rough efficiency: the replica pair only,
20 steps each (log_every 2: the rates of 9 metrics lines, as the full run's 400 steps give),
and no waves arms (at a few steps their training span is mostly their actors' start;
``benchmarks/waves.py --quick`` runs them). Its time is nearly all start-up (Ray with its
dashboard, a block actor, a Ray Train group of two, an assembly actor per arm), so it grows
with the machine's load rather than with the steps.

    python benchmarks/replicas.py [--quick] [--gpus] [--json] [--wait-idle MINUTES]
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import ray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import waves  # noqa: E402
from benchmarks.common import finish, load_average, machine, parser, settle  # noqa: E402
from dbparallel.config import load_config  # noqa: E402
from dbparallel.runtime.launch import run_ray  # noqa: E402
from dbparallel.runtime.ray_connect import state_api_here  # noqa: E402

RECIPE = Path(__file__).resolve().parents[1] / "jobs" / "tiny_cpu.yaml"
STEPS, WAVE_STEPS = 400, 300  # the replica pair's steps, the waves arms' steps per block
QUICK_STEPS = 20  # --quick: the replica pair only


def block_rate(run_dir: str, replicas: int, steps: int, gpus: bool) -> dict[str, Any]:
    """One block trained with ``replicas`` workers: its steady samples/s."""
    unit = ["runtime.gpus_per_block=1", "runtime.cpus_per_block=1"] if gpus else \
        ["runtime.cpus_per_block=1"]
    every = max(1, steps // 10)
    cfg = load_config([RECIPE], [
        f"run.dir={run_dir}", "model.blocks=1", "model.depth=4", "model.hidden=128",
        "model.heads=4", "train.batch_size=64", f"train.steps={steps}",
        f"train.log_every={every}", f"train.checkpoint_every={steps}",
        f"runtime.replicas_per_block={replicas}", *unit, "sample.per_class=1",
        "sample.eval_samples=10", "metrics.port=0"])
    report = run_ray(cfg, None, progress=False)
    lines = [json.loads(x) for x in
             (Path(run_dir) / "blocks" / "block_0" / "metrics.jsonl").read_text().splitlines()]
    rates = [x["samples_per_s"] for x in lines[1:] if x["samples_per_s"]]
    return {"replicas": replicas, "samples_per_s": statistics.median(rates),
            "samples_per_s_lines": rates, "final_loss": report["per_block"][0]["final_loss"],
            "wall_time_s": report["wall_time_s"], "batch_size": cfg.train.batch_size}


def run(quick: bool = False, gpus: bool = False) -> dict[str, Any]:
    steps = QUICK_STEPS if quick else STEPS
    before = load_average()
    with state_api_here() as dashboard:  # Ray Train asks the state API
        ray.init(address="local", include_dashboard=True, dashboard_port=dashboard,
                 logging_level="ERROR", log_to_driver=False)
    try:
        cores = int(ray.cluster_resources().get("CPU", 1))
        with tempfile.TemporaryDirectory() as runs:
            one = block_rate(f"{runs}/r1", 1, steps, gpus)
            two = block_rate(f"{runs}/r2", 2, steps, gpus)
            in_waves = None if quick else waves.compare(runs, cores, WAVE_STEPS)
    finally:
        ray.shutdown()
    return {"cores": cores, "gpus": gpus, "quick": quick, "steps": steps,
            "replicas": {"r1": one, "r2": two,
                         "efficiency": two["samples_per_s"] / (2 * one["samples_per_s"])},
            "waves": in_waves,  # None with --quick
            "load_average_before": before, "load_average_after": load_average(),
            "machine": machine()}


def table(result: dict[str, Any]) -> str:
    r, w = result["replicas"], result["waves"]
    unit = "GPU" if result["gpus"] else "core"
    lines = [f"{result['cores']} cores; load average {result['load_average_before']:.2f} "
             "before",
             f"one block, batch {r['r1']['batch_size']}: R=1 {r['r1']['samples_per_s']:,.0f} "
             f"samples/s, R=2 {r['r2']['samples_per_s']:,.0f} samples/s (one {unit} per "
             f"worker); efficiency {r['efficiency']:.2f}"]
    if w is None:
        return "\n".join([*lines, "(--quick: no waves arms; benchmarks/waves.py runs them)"])
    lines.append(f"B={w['blocks']}, {w['steps']} steps per block:")
    return "\n".join(lines + waves.comparison_lines(w))


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    r, w = result["replicas"], result["waves"]
    panels = 1 if w is None else 2  # --quick: the replica pair only
    fig, axes = plt.subplots(1, panels, figsize=(4.5 * panels, 3.2), squeeze=False)
    axes = axes[0]
    axes[0].bar(["R=1", "R=2", "2 x R=1"], [r["r1"]["samples_per_s"], r["r2"]["samples_per_s"],
                                            2 * r["r1"]["samples_per_s"]],
                color=["C0", "C1", "lightgray"])
    axes[0].set_ylabel("samples/s of one block")
    axes[0].set_title(f"replicas: efficiency {r['efficiency']:.2f}")
    if w is not None:
        axes[1].bar([f"{w['blocks']} at once", f"waves of {w['slots']}"],
                    [w["at_once"]["samples_per_s"], w["waves"]["samples_per_s"]],
                    color=["C2", "C3"])
        axes[1].set_ylabel("samples/s (all blocks)")
        axes[1].set_title(f"waves / at once = {w['waves_vs_at_once']:.2f}")
    fig.suptitle(f"{result['cores']} cores" + (", GPUs" if result["gpus"] else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = parser(__doc__.splitlines()[0], timed=True)
    p.add_argument("--gpus", action="store_true", help="one GPU per worker (a GPU cluster)")
    args = p.parse_args()
    settle(args, "replicas")
    finish("replicas", run(args.quick, args.gpus), args, table, plot)


if __name__ == "__main__":
    main()
