"""DiT sampling cost per image: DiffusionBlocks against the end-to-end DiT at equal steps.

Each Euler step of the composed chain runs only the block that owns its sigma (L/B layers), where
the end-to-end DiT runs all L layers (docs/method.md, Samplers and routing); both sample
through the project's own ``ImageGeneration.generate`` with classifier-free guidance, so every
step evaluates the layers on a conditional and an unconditional copy of the batch. Layer
evaluations are counted with hooks on the transformer layers (per image, guidance copies
included); wall time is the median of repeated runs on one torch thread. Cost does not depend
on the weights: the networks are freshly initialised.

    python benchmarks/sampling.py [--quick] [--json] [--wait-idle MINUTES]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import IDLE_LOAD, finish, machine, parser, settle  # noqa: E402
from dbparallel.config import Config, DataConfig, ModelConfig, RunConfig, SampleConfig  # noqa: E402
from dbparallel.models.layers import AdaLNLayer  # noqa: E402
from dbparallel.tasks.image_generation import ImageGeneration  # noqa: E402

DEPTH = 12
BLOCKS = (2, 3, 4, 6, 12)
SETUP = "DiT hidden 128, 4 heads, patch 2, 8x8x1 images (the embedded digits), depth 12"


def config(blocks: int, steps: int, depth: int = DEPTH, preset: str = "small") -> Config:
    """The DiT cut into ``blocks`` (1 = end to end), sampled with ``steps`` Euler steps."""
    return Config(task="dit", run=RunConfig(name="sampling-bench"), data=DataConfig(),
                  model=ModelConfig(preset=preset, blocks=blocks, depth=depth, patch_size=2),
                  sample=SampleConfig(steps=steps, cfg_scale=2.0))


def layer_evals_per_image(task: ImageGeneration, nets: list[torch.nn.Module]) -> int:
    """Transformer-layer applications per generated image, counted on a 2-image run."""
    count = [0]

    def hook(module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        count[0] += len(args[0])  # rows of x (N, T, D) this layer is applied to

    handles = [m.register_forward_pre_hook(hook) for net in nets for m in net.modules()
               if isinstance(m, AdaLNLayer)]
    try:
        task.generate(nets, torch.arange(2) % 10, torch.Generator().manual_seed(0))
    finally:
        for h in handles:
            h.remove()
    return count[0] // 2


def seconds_per_image(task: ImageGeneration, nets: list[torch.nn.Module], images: int,
                      repeats: int) -> float:
    """Median wall time of ``generate`` for ``images`` images, divided by ``images``."""
    labels = torch.arange(images) % 10
    task.generate(nets, labels[:2], torch.Generator().manual_seed(0))  # warm-up
    times = []
    for r in range(repeats):
        start = time.perf_counter()
        task.generate(nets, labels, torch.Generator().manual_seed(r))
        times.append(time.perf_counter() - start)
    return statistics.median(times) / images


def cost(blocks: int, steps: int, images: int, repeats: int, depth: int = DEPTH,
         preset: str = "small") -> dict[str, float]:
    """Layer evaluations and seconds per image of the chain of ``blocks`` blocks."""
    task = ImageGeneration(config(blocks, steps, depth, preset))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        nets = [task.build_block(b).eval() for b in range(blocks)]
    with torch.no_grad():
        evals = layer_evals_per_image(task, nets)
        seconds = seconds_per_image(task, nets, images, repeats)
    return {"layer_evals": evals, "s_per_image": seconds}


def run(quick: bool = False, blocks: tuple[int, ...] | None = None, steps: int | None = None,
        images: int | None = None, repeats: int | None = None, depth: int = DEPTH,
        preset: str = "small") -> dict[str, Any]:
    """One row per B: the chain of B blocks against the end-to-end DiT at the same steps."""
    blocks = blocks or ((3,) if quick else BLOCKS)
    steps = steps or (12 if quick else 50)
    images = images or (8 if quick else 32)
    repeats = repeats or (1 if quick else 3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core per sampler: stable timings, as one block actor has
    load_before = machine()["load_average"]
    try:
        e2e = cost(1, steps, images, repeats, depth, preset)
        rows = []
        for b in blocks:
            db = cost(b, steps, images, repeats, depth, preset)
            rows.append({"blocks": b, "steps": steps, "e2e_layer_evals": e2e["layer_evals"],
                         "db_layer_evals": db["layer_evals"],
                         "e2e_s_per_image": e2e["s_per_image"],
                         "db_s_per_image": db["s_per_image"],
                         "layer_eval_ratio": e2e["layer_evals"] / db["layer_evals"],
                         "wall_ratio": e2e["s_per_image"] / db["s_per_image"]})
    finally:
        torch.set_num_threads(threads)
    return {"rows": rows, "quick": quick, "setup": SETUP if (depth, preset) == (DEPTH, "small")
            else f"DiT preset {preset}, depth {depth}, 8x8x1", "images": images,
            "repeats": repeats, "cfg_scale": 2.0, "torch_threads": 1,
            "load_average_before": load_before, "idle_machine": load_before[0] < IDLE_LOAD,
            "machine": machine()}


def table(result: dict[str, Any]) -> str:
    lines = [f"{result['setup']}; {result['images']} images, median of {result['repeats']}",
             f"{'B':>3} {'steps':>5} {'e2e layer evals':>15} {'DB layer evals':>14} "
             f"{'ratio':>6} {'e2e ms/img':>10} {'DB ms/img':>9} {'ratio':>6} {'ratio/B':>7}"]
    for r in result["rows"]:
        lines.append(f"{r['blocks']:>3} {r['steps']:>5} {r['e2e_layer_evals']:>15} "
                     f"{r['db_layer_evals']:>14} {r['layer_eval_ratio']:>6.2f} "
                     f"{r['e2e_s_per_image'] * 1e3:>10.1f} {r['db_s_per_image'] * 1e3:>9.1f} "
                     f"{r['wall_ratio']:>6.2f} {r['wall_ratio'] / r['blocks']:>7.2f}")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    rows = result["rows"]
    bs = [r["blocks"] for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.8))
    ax.plot(bs, bs, "x--", color="gray", label="B (ideal)")
    ax.plot(bs, [r["layer_eval_ratio"] for r in rows], "o-", label="layer evaluations")
    ax.plot(bs, [r["wall_ratio"] for r in rows], "s-", label="wall time")
    ax.set(xlabel="blocks B", ylabel="end to end / DiffusionBlocks, per image",
           title=f"DiT sampling, {rows[0]['steps']} Euler steps with guidance"
                 + ("" if result["idle_machine"] else "\n(machine not idle: wall time unreliable)"))
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    args = parser(__doc__.split("\n")[0], timed=True).parse_args()
    settle(args, "sampling")
    finish("sampling", run(args.quick), args, table, plot)


if __name__ == "__main__":
    main()
