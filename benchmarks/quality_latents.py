"""A DiT on pixels against the same DiT on an autoencoder's latents, scored in pixel space.

The autoencoder is an exact, invertible stand-in (no VAE can be downloaded here): each
F x F patch of pixels becomes F*F channels (space-to-depth; F = 2 turns a 1x28x28
Fashion-MNIST image into 4x14x14), mixed by a fixed orthonormal matrix (the Q of a seeded
Gaussian's QR), times GAIN plus SHIFT, so that data.latent_scale and data.latent_shift have
something to undo; ``decode`` is its exact inverse. The images of both splits are encoded
once into train.parquet and test.parquet (float16 lists, as docs/vision.md stores a VAE's
latents) and three runs train at equal steps and batch, with the same model (preset, depth,
width, blocks):

    pixels     1x28x28, model.patch_size=2  (196 tokens; the baseline)
    latents    4x14x14, model.patch_size=1  (196 tokens: the same sequence)
    latents    4x14x14, model.patch_size=2  (49 tokens: why latents are used)

The latent runs take data.latent_shift=SHIFT (the autoencoder's own shift) and
data.latent_scale = noise.sigma_data / std(latents - SHIFT) over the whole training split
(the warning ``train`` prints reads the first 16 rows only; its value is recorded beside).
Each run is then loaded (``dbparallel.load``), samples ``--samples`` images (classes in
turn, seed 0), the latents are decoded by ``decode`` (clamped to [0, 1], as sample.decoder
is), and all three are scored alike by the pixel run's in-domain classifier
(``training.eval.image_generation.score`` with the pixel config): ``fd_indomain`` and
``sample_accuracy`` against the pixel test split. The time per step is each block's from
report.json (model_flops_per_step / achieved_tflops: the mean of its steady steps). The
report's own ``assembly`` of a latent run scores latents, not pixels; it is kept as
``run_assembly`` for reference only. The latent runs also name ``decode`` as
sample.decoder, so their samples.png shows decoded images.

    python benchmarks/quality_latents.py [--quick] [--steps 500] [--samples 500]
        [--seeds 0 1] [--runs-dir DIR] [--wait-idle MINUTES]

About 6 minutes a seed on 2 idle CPU cores (one run at a time, each under 2.5 minutes).
Needs `apt-get install dataset-fashion-mnist`; without it the 8x8 digits stand in (F = 2:
4x4x4 latents).
"""

from __future__ import annotations

import sys
import tempfile
import time
from itertools import product
from pathlib import Path
from statistics import mean
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dbparallel  # noqa: E402
from benchmarks.common import finish, load_average, machine, parser, settle  # noqa: E402
from dbparallel.config import load_config  # noqa: E402
from dbparallel.data.sources import open_data  # noqa: E402
from dbparallel.errors import DataError  # noqa: E402
from dbparallel.tasks import build_task  # noqa: E402
from dbparallel.training.data_warnings import latent_scale_warning  # noqa: E402
from dbparallel.training.eval.image_generation import score  # noqa: E402

F = 2  # pixels per side of a patch: F*F channels per image channel
GAIN, SHIFT = 5.0, 0.3  # the stand-in's latents: mixed patches times GAIN plus SHIFT
MIX_SEED = 0
DECODER = "benchmarks.quality_latents:decode"
RECIPE = "jobs/dit_fashion_tiny.yaml"
MODEL = ["model.depth=4", "model.blocks=2"]  # the recipe's width 32, 2 heads, mlp_ratio 2
COMMON = ["metrics.port=0", "train.assemble_every=0"]
STEPS, QUICK_STEPS = 500, 20
SAMPLES, QUICK_SAMPLES = 500, 50
METRICS = ("fd_indomain", "sample_accuracy")


def mix(channels: int) -> torch.Tensor:
    """The fixed orthonormal (channels, channels) matrix of the stand-in's channel mix."""
    gauss = np.random.default_rng(MIX_SEED).normal(size=(channels, channels))
    return torch.from_numpy(np.linalg.qr(gauss)[0]).float()


def encode(pixels: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) pixels in [0, 1] -> (N, C*F*F, H/F, W/F) latents."""
    n, c, h, w = pixels.shape
    patches = pixels.reshape(n, c, h // F, F, w // F, F).permute(0, 1, 3, 5, 2, 4)
    patches = patches.reshape(n, c * F * F, h // F, w // F)
    return torch.einsum("ij,njhw->nihw", mix(c * F * F), patches) * GAIN + SHIFT


def decode(latents: torch.Tensor) -> torch.Tensor:
    """``encode`` undone: (N, C*F*F, H, W) latents -> (N, C, H*F, W*F) pixels (the
    sample.decoder of the latent runs; clamping to [0, 1] is left to the caller)."""
    n, k, h, w = latents.shape
    m = mix(k).to(latents.device, latents.dtype)
    patches = torch.einsum("ij,nihw->njhw", m, (latents - SHIFT) / GAIN)
    c = k // (F * F)
    return patches.reshape(n, c, F, F, h, w).permute(0, 1, 4, 2, 5, 3).reshape(
        n, c, h * F, w * F)


def pixel_data() -> tuple[str, list[str], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """(name, the pixel runs' data overrides, split -> (pixels (N, 1, S, S) in [0, 1],
    labels)): Fashion-MNIST where it is installed, else the 8x8 digits."""
    try:
        from dbparallel.data.fashion import fashion_table

        table = fashion_table()
    except DataError as err:
        print(f"Fashion-MNIST not found ({err}); the 8x8 digits stand in", file=sys.stderr)
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = (digits.images / 16.0)[:, None].astype(np.float32)
        cut = 1500  # the embedded digits have no test split: the last rows are held out
        return "digits", ["data.source=digits", "data.image_size=8"], {
            "train": (images[:cut], digits.target[:cut]),
            "test": (images[cut:], digits.target[cut:])}
    images = np.stack(table.column("image").to_numpy(zero_copy_only=False))
    images = (images.reshape(-1, 1, 28, 28) / 255.0).astype(np.float32)
    labels = table.column("label").to_numpy()
    split = np.asarray(table.column("split").to_pylist())
    return "fashion_mnist", ["data.source=fashion_mnist", "data.image_size=28"], {
        s: (images[split == s], labels[split == s]) for s in ("train", "test")}


def write_latents(root: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]]
                  ) -> dict[str, Any]:
    """train.parquet and test.parquet of float16 latents under ``root``; returns their shape
    and the round trip's largest pixel error (float16 storage included)."""
    root.mkdir(parents=True, exist_ok=True)
    worst, shape = 0.0, ()
    for split, (pixels, labels) in splits.items():
        latents = encode(torch.from_numpy(pixels)).half()
        shape = tuple(latents.shape[1:])
        worst = max(worst, float((decode(latents.float()) - torch.from_numpy(pixels))
                                 .abs().max()))
        flat = latents.flatten(1).numpy()
        pq.write_table(pa.table({"image": pa.array(list(flat), type=pa.list_(pa.float16())),
                                 "label": pa.array(labels, pa.int64())}),
                       root / f"{split}.parquet")
    return {"latent_shape": list(shape), "round_trip_max_pixel_error": worst}


def fitted_scale(train_pixels: np.ndarray, sigma_data: float) -> float:
    """noise.sigma_data / the standard deviation of the training latents less SHIFT (as
    stored, float16)."""
    latents = encode(torch.from_numpy(train_pixels)).half().double()
    return sigma_data / float((latents - SHIFT).std())


def arms(data: list[str], latent_dir: Path, shape: list[int], scale: float
         ) -> list[tuple[str, list[str]]]:
    """(name, overrides) of the three runs."""
    latent = ["data.source=parquet", f"data.path={latent_dir}", "data.latents=true",
              f"data.channels={shape[0]}", f"data.image_size={shape[1]}",
              f"data.latent_scale={scale:.6g}", f"data.latent_shift={SHIFT}",
              f"sample.decoder={DECODER}"]
    return [("pixels_p2", [*data, "model.patch_size=2"]),
            ("latents_p1", [*latent, "model.patch_size=1"]),
            ("latents_p2", [*latent, "model.patch_size=2"])]


def step_times(report: dict[str, Any]) -> list[float]:
    """Seconds per training step of each block (its steady steps: flops / achieved rate)."""
    return [b["model_flops_per_step"] / (b["achieved_tflops"] * 1e12)
            for b in report["per_block"]]


def pixel_score(pixel_cfg: Any, images: torch.Tensor, labels: torch.Tensor
                ) -> dict[str, float]:
    """fd_indomain and sample_accuracy of ``images`` in [0, 1] by the pixel run's in-domain
    classifier, against the pixel test split."""
    metrics = score(pixel_cfg, build_task(pixel_cfg), open_data(pixel_cfg.data), images,
                    labels)
    return {k: float(metrics[k]) for k in (*METRICS, "classifier_accuracy")}


def run(runs_dir: Path, steps: int, samples: int, seeds: list[int], quick: bool
        ) -> dict[str, Any]:
    """Encode the data, train the three arms one after another (for each seed), score each
    in pixels."""
    name, data, splits = pixel_data()
    latent_dir = runs_dir / "latents"
    written = write_latents(latent_dir, splits)
    extra = ["sample.steps=4", "sample.eval_samples=20"] if quick else []
    base = [*MODEL, f"train.steps={steps}", *extra, *COMMON]
    pixel_cfg = load_config([ROOT / RECIPE], [*base, *data, "model.patch_size=2"])
    sigma_data = pixel_cfg.noise.sigma_data
    scale = fitted_scale(splits["train"][0], sigma_data)
    probe = load_config([ROOT / RECIPE], [*base, *arms(data, latent_dir,
                                                        written["latent_shape"], 1.0)[1][1]])
    warning = latent_scale_warning(probe, open_data(probe.data))
    labels = torch.arange(samples) % pixel_cfg.data.num_classes
    rows = []
    for seed, (arm, overrides) in product(seeds, arms(data, latent_dir,
                                                      written["latent_shape"], scale)):
        run_dir = runs_dir / f"{arm}-s{seed}"
        load = load_average()
        print(f"{arm} s{seed}: training (load average {load:.1f})", flush=True)
        start = time.perf_counter()
        report = dbparallel.train(ROOT / RECIPE, overrides=[*base, *overrides,
                                                            f"run.seed={seed}",
                                                            f"run.dir={run_dir}"],
                                  local=True, progress=False)
        train_s = time.perf_counter() - start
        net = dbparallel.load(run_dir)
        out = net.sample(labels, seed=0)
        images = out if arm.startswith("pixels") else decode(out)
        metrics = pixel_score(pixel_cfg, images.clamp(0, 1), labels)
        cfg = net.cfg
        tokens = (cfg.data.image_size // cfg.model.patch_size) ** 2
        per_block = step_times(report)
        rows.append({"arm": arm, "seed": seed,
                     "input": "pixels" if arm.startswith("pixels") else "latents",
                     "shape": [cfg.data.channels, cfg.data.image_size, cfg.data.image_size],
                     "patch_size": cfg.model.patch_size, "tokens": tokens,
                     "steps_per_block": steps, "batch_size": cfg.train.batch_size,
                     "s_per_step": sum(per_block) / len(per_block),
                     "s_per_step_per_block": per_block, **metrics,
                     "run_assembly": report["assembly"],
                     "final_loss": [b["final_loss"] for b in report["per_block"]],
                     "heldout_loss": [b["heldout_loss"] for b in report["per_block"]],
                     "wall_time_s": round(float(report["wall_time_s"]), 1),
                     "call_time_s": round(train_s, 1), "load_average_before": load,
                     "overrides": " ".join(overrides)})
        print(f"{arm} s{seed}: {rows[-1]['s_per_step'] * 1e3:.1f} ms/step, "
              + ", ".join(f"{m}={metrics[m]:.4g}" for m in METRICS)
              + f" ({train_s:.0f} s)", flush=True)
    return {"setting": {"data": name, "recipe": RECIPE, "model": MODEL,
                        "steps_per_block": steps, "samples": samples, "sample_seed": 0,
                        "autoencoder": {"patch": F, "gain": GAIN, "shift": SHIFT,
                                        "mix_seed": MIX_SEED, "storage": "float16",
                                        **written},
                        "latent_scale": scale, "latent_shift": SHIFT,
                        "latent_scale_from": "noise.sigma_data / std(train latents - shift), "
                                             "whole training split",
                        "sigma_data": sigma_data,
                        "warning_at_scale_1": warning, "seeds": seeds, "quick": quick},
            "rows": rows, "means": means(rows)}


def means(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per arm: the mean over seeds of the time per step and of each pixel metric."""
    out = {}
    for arm in dict.fromkeys(r["arm"] for r in rows):
        mine = [r for r in rows if r["arm"] == arm]
        out[arm] = {"runs": len(mine), **{k: mean(r[k] for r in mine)
                                         for k in ("s_per_step", *METRICS, "wall_time_s")}}
    return out


def table(result: dict[str, Any]) -> str:
    """One line per run, then the means per arm."""
    lines = [f"{'arm':<11} {'seed':>4} {'shape':<9} {'patch':>5} {'tokens':>6} {'ms/step':>8} "
             f"{'fd_indomain':>11} {'sample acc':>10} {'wall s':>6}"]
    first = {r["arm"]: r for r in reversed(result["rows"])}
    for r in [*result["rows"], *({**first[a], **m, "seed": "mean"}
                                 for a, m in result["means"].items())]:
        shape = "x".join(map(str, r["shape"]))
        lines.append(f"{r['arm']:<11} {r['seed']:>4} {shape:<9} {r['patch_size']:>5} "
                     f"{r['tokens']:>6} {r['s_per_step'] * 1e3:>8.1f} "
                     f"{r['fd_indomain']:>11.2f} {r['sample_accuracy']:>10.3f} "
                     f"{r['wall_time_s']:>6.0f}")
    s = result["setting"]
    lines.append(f"data.latent_scale={s['latent_scale']:.4g} data.latent_shift="
                 f"{s['latent_shift']:g} ({s['latent_scale_from']})")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """Time per step, fd_indomain and sample accuracy (decoded, in pixels) per arm: a bar
    at the mean, a dot per seed."""
    import matplotlib.pyplot as plt

    first = {r["arm"]: r for r in reversed(result["rows"])}
    arms_ = list(result["means"])
    names = [f"{a}\n{'x'.join(map(str, first[a]['shape']))}, {first[a]['tokens']} tok"
             for a in arms_]
    colours = ["gray", "tab:blue", "tab:orange"][:len(arms_)]
    panels = [("s_per_step", "ms per step (mean of blocks)", 1e3),
              ("fd_indomain", "fd_indomain, pixels (lower is better)", 1.0),
              ("sample_accuracy", "sample accuracy, pixels (higher is better)", 1.0)]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, (key, title, factor) in zip(axes, panels, strict=True):
        values = [result["means"][a][key] * factor for a in arms_]
        ax.bar(range(len(arms_)), values, color=colours)
        for i, a in enumerate(arms_):
            seeds = [r[key] * factor for r in result["rows"] if r["arm"] == a]
            ax.scatter([i] * len(seeds), seeds, color="black", s=10, zorder=3)
            ax.text(i, values[i], f"{values[i]:.3g}", ha="left", va="bottom", fontsize=7)
        ax.set_xticks(range(len(arms_)), names, fontsize=7)
        ax.set(title=title)
    s = result["setting"]
    fig.suptitle(f"DiT on {s['data']}: pixels vs stand-in autoencoder latents, "
                 f"{s['steps_per_block']} steps per block, "
                 f"{result['rows'][0]['batch_size']} per batch, {s['samples']} decoded samples, "
                 f"seeds {', '.join(map(str, s['seeds']))}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = parser(__doc__.split("\n")[0], timed=True)
    p.add_argument("--steps", type=int, default=STEPS, help="train.steps of every block")
    p.add_argument("--samples", type=int, default=SAMPLES, help="samples scored per arm")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="run.seed of each run")
    p.add_argument("--name", default="quality_latents", help="results file name")
    p.add_argument("--runs-dir", default="", help="keep the data and run directories here")
    args = p.parse_args()
    steps, samples, seeds = (QUICK_STEPS, QUICK_SAMPLES, [0]) if args.quick else \
        (args.steps, args.samples, args.seeds)
    settle(args, args.name)
    start, load_before = time.perf_counter(), list(machine()["load_average"])
    with tempfile.TemporaryDirectory(prefix="quality_latents_") as tmp:
        runs_dir = Path(args.runs_dir) if args.runs_dir else Path(tmp)
        if args.runs_dir and any(runs_dir.glob("*/report.json")):
            raise SystemExit(f"{runs_dir} holds runs: they would resume; choose a new "
                             "--runs-dir")
        result = run(runs_dir, steps, samples, seeds, args.quick)
    result |= {"total_wall_time_s": round(time.perf_counter() - start, 1),
               "load_average_before": load_before, "machine": machine()}
    finish(args.name, result, args, table, plot)


if __name__ == "__main__":
    main()
