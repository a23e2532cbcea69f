"""ViT test accuracy on the digits with and without train.augment, at equal steps.

scikit-learn's 1,797 8x8 digits have no test split of their own (a run on them scores its
training rows), so this benchmark writes them once as Parquet with a ``split`` column: a fixed
random 300 rows are ``test``, the other 1,497 ``train``. Each augmentation then trains the same
ViT (``jobs/vit_tiny.yaml`` at 8x8, patch 2) as DiffusionBlocks and end to end, for the same
steps and seeds, and reports the accuracy on the 300 test rows. Flips are left out: a mirrored
digit is no digit (docs/vision.md, Augmentation). Every run is ``runtime.local``.

    python benchmarks/quality_augment.py [--quick] [--steps 600 2000] [--seeds 0 1]
        [--augments none crop] [--blocks 2]
"""

from __future__ import annotations

import sys
import tempfile
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import finish, load_average, parser, quality_table  # noqa: E402
from dbparallel.config import load_config  # noqa: E402
from dbparallel.data.sources import digits_table  # noqa: E402
from dbparallel.runtime.local import run_local  # noqa: E402

RECIPE = "jobs/vit_tiny.yaml"
TEST_ROWS = 300
DIGITS = ["data.image_size=8", "model.patch_size=2"]  # 16 patch tokens, as at 28x28 / 7
COMMON = ["runtime.local=true", "metrics.port=0", "train.assemble_every=0",
          "train.log_every=100"]


def split_digits(path: Path, seed: int = 0) -> Path:
    """The digits as Parquet at ``path`` with a fixed random TEST_ROWS of them as test rows."""
    table = digits_table()
    test = np.zeros(len(table), dtype=bool)
    test[np.random.default_rng(seed).permutation(len(table))[:TEST_ROWS]] = True
    split = pa.array(np.where(test, "test", "train").tolist())
    pq.write_table(table.append_column("split", split), path)
    return path


def methods(blocks: int) -> list[tuple[str, int, list[str]]]:
    """(method, B, overrides): end to end, then DiffusionBlocks with ``blocks`` blocks."""
    return [("end_to_end", 1, ["model.blocks=1", "train.objective=end_to_end"]),
            ("diffusionblocks", blocks, [f"model.blocks={blocks}"])]


def run(data: Path, runs_dir: Path, steps: list[int], seeds: list[int], augments: list[str],
        blocks: int) -> dict[str, Any]:
    """Every (steps, method, augment, seed); rows in the shape of quality_images.json."""
    rows: list[dict[str, Any]] = []
    for k, (method, b, extra), augment, seed in product(steps, methods(blocks), augments, seeds):
        overrides = [*DIGITS, *extra, f"train.steps={k}",
                     f"train.augment={augment}", f"run.seed={seed}"]
        name = f"vit-{method}-B{b}-{augment}-k{k}-s{seed}"
        print(f"{name}: training (load average {load_average():.1f})", flush=True)
        cfg = load_config([ROOT / RECIPE], [
            *overrides, *COMMON, "data.source=parquet", f"data.path={data}",
            f"run.dir={runs_dir / name}", f"run.name=quality-{name}"])
        report = run_local(cfg, progress=False)
        accuracy = float(report["assembly"]["accuracy"])
        rows.append({"task": "vit", "method": method, "blocks": b,
                     "variant": f"augment={augment}", "seed": seed,
                     "metric": "accuracy", "value": accuracy,
                     "eval_rows": int(report["assembly"]["eval_rows"]),
                     "steps_per_block": k, "train_layer_steps": k * cfg.model.depth,
                     "wall_time_s": round(float(report["wall_time_s"]), 1),
                     "config": " ".join([RECIPE, *overrides])})
        print(f"{name}: accuracy={accuracy:.4f} ({report['wall_time_s']:.0f} s)",
              flush=True)
    return {"data": f"scikit-learn digits, {TEST_ROWS} random test rows (numpy seed 0)",
            "rows": rows}


def table(result: dict[str, Any]) -> str:
    return quality_table(result)


def plot(result: dict[str, Any], path: Path) -> None:
    """Accuracy per (steps, method, augment), one dot per seed."""
    import matplotlib.pyplot as plt

    rows = result["rows"]
    keys = list(dict.fromkeys((r["steps_per_block"], r["method"], r["blocks"], r["variant"])
                              for r in rows))
    fig, ax = plt.subplots(figsize=(6.5, 1.2 + 0.4 * len(keys)))
    for i, key in enumerate(keys):
        values = [r["value"] for r in rows
                  if (r["steps_per_block"], r["method"], r["blocks"], r["variant"]) == key]
        ax.scatter(values, [i] * len(values), color="tab:blue")
        ax.plot([sum(values) / len(values)] * 2, [i - 0.3, i + 0.3], color="black")
    ax.set_yticks(range(len(keys)), [f"{k} steps: {m} B={b} {v}" for k, m, b, v in keys],
                  fontsize=7)
    ax.invert_yaxis()
    ax.set(xlabel="test accuracy (300 digits)", title="ViT with and without train.augment")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--steps", nargs="+", type=int, default=[600, 2000],
                   help="train.steps of every block, a row each")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="run.seed of each run")
    p.add_argument("--augments", nargs="+", default=["none", "crop"])
    p.add_argument("--blocks", type=int, default=2, help="DiffusionBlocks' model.blocks")
    p.add_argument("--name", default="quality_augment", help="results file name")
    args = p.parse_args()
    steps, seeds = ([20], [0]) if args.quick else (args.steps, args.seeds)
    with tempfile.TemporaryDirectory(prefix="quality_augment_") as tmp:
        data = split_digits(Path(tmp) / "digits.parquet")
        result = run(data, Path(tmp) / "runs", steps, seeds, args.augments, args.blocks)
    finish(args.name, result, args, table, plot)


if __name__ == "__main__":
    main()
