"""The embedded default DiT with train.lr_schedule constant and cosine, at equal steps.

The default config (``dbparallel train`` with no recipe: task=dit on the 8x8 digits, 4 blocks,
train.lr 1e-3 after 100 warm-up steps), but at 1,000 steps per block instead of the default
1,500 (``--steps``): at 1,500 one run took 159 s on 2 CPU cores, so the 4 runs would not fit in
10 minutes. It trains once with ``train.lr_schedule=constant`` and once with
``train.lr_schedule=cosine train.min_lr=1e-5`` (half a cosine from train.lr towards
train.min_lr over each block's steps after warm-up, ``dbparallel/training/schedule.py``), for
each seed. Per run it records the assembly's
``sample_accuracy`` and ``fd_indomain``, each block's ``final_loss`` (mean of its last
train.log_every steps) and ``heldout_loss`` (its EMA weights' loss with fixed noise on the first
train.heldout_rows rows of the held-out split; the embedded digits have no test split, so these
are training rows: a check of the fit, not of generalisation), and the run's wall time. Every
run is ``runtime.local`` in its own run.dir under a temporary directory; the 4 runs take
under 10 minutes on 2 CPU cores.

    python benchmarks/quality_schedule.py [--quick] [--steps 1000] [--seeds 0 1]
"""

from __future__ import annotations

import sys
import tempfile
import time
from itertools import product
from pathlib import Path
from statistics import mean
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dbparallel  # noqa: E402
from benchmarks.common import finish, load_average, machine, parser  # noqa: E402
from dbparallel.config import load_config  # noqa: E402
from dbparallel.data.sources import open_data  # noqa: E402

SCHEDULES = {"constant": ["train.lr_schedule=constant"],
             "cosine": ["train.lr_schedule=cosine", "train.min_lr=1e-5"]}
COMMON = ["metrics.port=0"]
METRICS = ("sample_accuracy", "fd_indomain")
STEPS = 1000  # the default config's 1,500 steps per block: 4 runs of about 160 s on 2 cores
QUICK = ["train.warmup_steps=5"]  # --quick's 20 steps: a cosine needs steps after warm-up


def run(runs_dir: Path, steps: int, seeds: list[int], setting: list[str]) -> dict[str, Any]:
    """Every (schedule, seed) of the default config with ``setting`` at ``steps`` steps per
    block."""
    rows: list[dict[str, Any]] = []
    for (schedule, extra), seed in product(SCHEDULES.items(), seeds):
        overrides = [*extra, *setting, f"train.steps={steps}", f"run.seed={seed}"]
        name = f"{schedule}-s{seed}"
        print(f"{name}: training (load average {load_average():.1f})", flush=True)
        start = time.perf_counter()
        report = dbparallel.train(overrides=[*overrides, *COMMON, f"run.dir={runs_dir / name}"],
                                  local=True, progress=False)
        elapsed = time.perf_counter() - start
        row = {"schedule": schedule, "seed": seed, "steps_per_block": steps,
               **{m: float(report["assembly"][m]) for m in METRICS},
               "per_block": [{"block": b["block"], "final_loss": b["final_loss"],
                              "heldout_loss": b["heldout_loss"]} for b in report["per_block"]],
               "wall_time_s": round(float(report["wall_time_s"]), 1),
               "call_time_s": round(elapsed, 1), "overrides": " ".join(overrides)}
        rows.append(row)
        print(f"{name}: sample_accuracy={row['sample_accuracy']:.4f} "
              f"fd_indomain={row['fd_indomain']:.2f} ({elapsed:.0f} s)", flush=True)
    return {"rows": rows, "means": means(rows)}


def means(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per schedule: the mean over seeds of each metric, of each block's losses, of wall time."""
    out: dict[str, dict[str, Any]] = {}
    for schedule in dict.fromkeys(r["schedule"] for r in rows):
        mine = [r for r in rows if r["schedule"] == schedule]
        blocks = len(mine[0]["per_block"])
        out[schedule] = {
            "runs": len(mine),
            **{m: mean(r[m] for r in mine) for m in METRICS},
            **{k: [mean(r["per_block"][b][k] for r in mine) for b in range(blocks)]
               for k in ("final_loss", "heldout_loss")},
            "wall_time_s": mean(r["wall_time_s"] for r in mine)}
    return out


def table(result: dict[str, Any]) -> str:
    """One line per run, then the means per schedule; losses are block 0 .. B-1."""
    def losses(values: list[float]) -> str:
        return " ".join(f"{v:.4f}" for v in values)

    lines = [f"{'schedule':<9} {'seed':>4} {'sample acc':>10} {'fd_indomain':>11} "
             f"{'final_loss per block':<30} {'heldout_loss per block':<30} {'wall s':>6}"]
    for r in result["rows"]:
        lines.append(f"{r['schedule']:<9} {r['seed']:>4} {r['sample_accuracy']:>10.4f} "
                     f"{r['fd_indomain']:>11.2f} "
                     f"{losses([b['final_loss'] for b in r['per_block']]):<30} "
                     f"{losses([b['heldout_loss'] for b in r['per_block']]):<30} "
                     f"{r['wall_time_s']:>6.0f}")
    for schedule, m in result["means"].items():
        lines.append(f"{schedule:<9} {'mean':>4} {m['sample_accuracy']:>10.4f} "
                     f"{m['fd_indomain']:>11.2f} {losses(m['final_loss']):<30} "
                     f"{losses(m['heldout_loss']):<30} {m['wall_time_s']:>6.0f}")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """Sample accuracy and fd_indomain per schedule (a dot per seed, a bar at the mean), and
    each block's held-out loss per run."""
    import matplotlib.pyplot as plt

    rows, schedules = result["rows"], list(result["means"])
    colours = dict(zip(schedules, ["tab:blue", "tab:orange"], strict=False))
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    for ax, metric in zip(axes[:2], METRICS, strict=True):
        for i, schedule in enumerate(schedules):
            values = [r[metric] for r in rows if r["schedule"] == schedule]
            ax.scatter([i] * len(values), values, color=colours[schedule])
            ax.plot([i - 0.25, i + 0.25], [result["means"][schedule][metric]] * 2, color="black")
        ax.set_xticks(range(len(schedules)), schedules)
        ax.set_xlim(-0.6, len(schedules) - 0.4)
        ax.set(title=metric + (" (higher is better)" if metric == "sample_accuracy"
                               else " (lower is better)"))
    ax = axes[2]
    for r in rows:
        ax.plot([b["block"] for b in r["per_block"]], [b["heldout_loss"] for b in r["per_block"]],
                marker="o", color=colours[r["schedule"]], alpha=0.7,
                label=f"{r['schedule']} s{r['seed']}")
    ax.set(xlabel="block (0: highest noise)", title="heldout_loss (training rows)")
    ax.set_xticks(range(len(rows[0]["per_block"])))
    ax.legend(fontsize=7)
    steps = rows[0]["steps_per_block"]
    fig.suptitle(f"default DiT on the digits, {steps} steps per block: "
                 "train.lr_schedule constant vs cosine (min_lr 1e-5)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=STEPS, help="train.steps of every block")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="run.seed of each run")
    p.add_argument("--name", default="quality_schedule", help="results file name")
    args = p.parse_args()
    steps, seeds = (20, [0]) if args.quick else (args.steps, args.seeds)
    setting = QUICK if args.quick else []
    default_steps = load_config([], []).train.steps
    cfg = load_config([], [*setting, f"train.steps={steps}"])
    index = open_data(cfg.data)
    start, load_before = time.perf_counter(), list(machine()["load_average"])
    with tempfile.TemporaryDirectory(prefix="quality_schedule_") as tmp:
        result = run(Path(tmp) / "runs", steps, seeds, setting)
    result = {
        "setting": {"config": "default (no recipe): task=dit, digits 8x8, "
                              f"model.blocks={cfg.model.blocks}",
                    "steps_per_block": steps, "default_steps_per_block": default_steps,
                    "steps_note": f"{steps:,} steps per block, not the default "
                                  f"{default_steps:,}: one run at 1,500 took 159 s on 2 CPU "
                                  "cores, 4 runs over 10 minutes" if steps != default_steps
                                  else "",
                    "seeds": seeds, "lr": cfg.train.lr,
                    "warmup_steps": cfg.train.warmup_steps, "cosine_min_lr": 1e-5,
                    "heldout_split": index.heldout_split,
                    "heldout_rows": cfg.train.heldout_rows, "quick": args.quick},
        **result, "total_wall_time_s": round(time.perf_counter() - start, 1),
        "load_average_before": load_before, "machine": machine()}
    finish(args.name, result, args, table, plot)


if __name__ == "__main__":
    main()
