"""Training memory of one block against the whole network trained end to end (paper App. G).

For DiT, ViT and the AR model at depth 12 and 24 and B = 1, 2, 3, 4, 6, 12 it measures the
bytes one training step holds, as training/plan.py counts them: parameters, gradients and
Adam's two moments (4P per parameter byte, the byte meter's accounting of core/memory.py),
the EMA's copy of the weights (P), the peak bytes saved for backward, the step's input rows
and its noise draws. Three networks are measured:
  - one block (L/B layers with its private stem and head), trained as DiffusionBlocks;
  - the network trained end to end (B = 1, train.objective=end_to_end);
  - the same end-to-end network with activation checkpointing around every layer
    (train.checkpoint_layers), and one block with it.
Shapes alone decide these bytes, so the step runs on the meta device at the real batch size,
with the attention kernel the CPU runs (see ``cpu_attention_on_meta``); tests check that the
meta numbers equal a real CPU step's.

    python benchmarks/memory.py [--quick] [--json]
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import finish, machine, mib, parser  # noqa: E402
from dbparallel.config import (  # noqa: E402
    Config,
    DataConfig,
    ModelConfig,
    RunConfig,
    SampleConfig,
    TrainConfig,
)
from dbparallel.tasks import build_task  # noqa: E402
from dbparallel.training.plan import step_bytes as plan_step_bytes  # noqa: E402

DEPTHS = (12, 24)
BLOCKS = (1, 2, 3, 4, 6, 12)


@dataclass(frozen=True)
class Setup:
    """A model size and batch at which memory is measured."""

    task: str
    label: str
    model: dict[str, Any]  # ModelConfig fields besides blocks and depth
    data: dict[str, Any]  # DataConfig fields
    batch: int


SETUPS: dict[str, Setup] = {
    # DiT-S/2 as on the H100 (benchmarks/gpu_bench.py), so the two meters can be compared
    "dit": Setup("dit", "DiT-S/2, 32x32x3, batch 128", {"preset": "dit-s", "patch_size": 2},
                 {"image_size": 32, "channels": 3}, 128),
    # the paper's CIFAR ViT widths (hidden 128, 4 heads, patch 4; paper App. E.1), MLP ratio 4
    "vit": Setup("vit", "ViT hidden 128, 4 heads, patch 4, 32x32x3, batch 128",
                 {"preset": "small", "patch_size": 4}, {"image_size": 32, "channels": 3}, 128),
    # the paper's LM widths (768 hidden, 12 heads, context 256, batch 256) on characters
    "ar": Setup("ar", "AR hidden 768, 12 heads, 256 characters, vocab 128, batch 256",
                {"preset": "base", "hidden": 768, "heads": 12},
                {"seq_len": 256, "vocab_size": 128}, 256),
}


def config(setup: Setup, depth: int, blocks: int, end_to_end: bool = False,
           batch: int | None = None) -> Config:
    """The Config of ``setup`` cut into ``blocks`` (or the end-to-end baseline)."""
    return Config(
        task=setup.task, run=RunConfig(name="memory-bench"),
        data=DataConfig(source="parquet", path="synthetic", **setup.data),
        model=ModelConfig(blocks=1 if end_to_end else blocks, depth=depth, **setup.model),
        train=TrainConfig(batch_size=batch or setup.batch,
                          objective="end_to_end" if end_to_end else "diffusionblocks"),
        sample=SampleConfig(prompt_len=1, gen_len=1),  # no text is generated here
    )


# ---------------------------------------------------------------------------- measurement
def step_bytes(cfg: Config, block: int = 0, checkpointed: bool = False,
               device: str = "meta") -> dict[str, int]:
    """``training.plan.step_bytes``, optionally with every layer checkpointed
    (train.checkpoint_layers)."""
    cfg = copy.deepcopy(cfg)
    cfg.train.checkpoint_layers = checkpointed
    return plan_step_bytes(cfg, block, device)


def measure(model: str, depths: tuple[int, ...] = DEPTHS, blocks: tuple[int, ...] = BLOCKS,
            batch: int | None = None) -> list[dict[str, Any]]:
    """Rows of the memory table for one model (every block of a network has the same size,
    so block 0 stands for all)."""
    setup = SETUPS[model]
    rows = []
    for depth in depths:
        e2e = step_bytes(config(setup, depth, 1, end_to_end=True, batch=batch))
        ckpt = step_bytes(config(setup, depth, 1, end_to_end=True, batch=batch),
                          checkpointed=True)
        for b in blocks:
            if depth % b:
                continue
            block = step_bytes(config(setup, depth, b, batch=batch))
            both = step_bytes(config(setup, depth, b, batch=batch), checkpointed=True)
            rows.append({"model": model, "depth": depth, "blocks": b,
                         "e2e_bytes": e2e["total"], "e2e_checkpointed_bytes": ckpt["total"],
                         "block_bytes": block["total"], "stem_bytes": block["stem_and_head"],
                         "block_checkpointed_bytes": both["total"],
                         "ratio": e2e["total"] / block["total"],
                         "block_activation_bytes": block["activations"],
                         "e2e_activation_bytes": e2e["activations"]})
    return rows


def task_available(model: str) -> str | None:
    """None if ``model``'s task can be built, else why not."""
    try:
        build_task(config(SETUPS[model], 12, 1))
    except (ImportError, AttributeError) as err:
        return f"{type(err).__name__}: {err}"
    return None


def run(quick: bool = False, models: tuple[str, ...] = ("dit", "vit", "ar")) -> dict[str, Any]:
    """The memory table of every available model (``quick``: depth 12, B <= 4)."""
    depths, blocks = ((12,), (1, 2, 3, 4)) if quick else (DEPTHS, BLOCKS)
    rows, skipped = [], {}
    for model in models:
        reason = task_available(model)
        if reason:
            print(f"memory: {model} skipped, its task is not available ({reason})",
                  file=sys.stderr)
            skipped[model] = reason
            continue
        rows.extend(measure(model, depths, blocks))
    return {"rows": rows, "skipped": skipped, "quick": quick, "machine": machine(),
            "setups": {m: SETUPS[m].label for m in models if m not in skipped},
            "accounting": "4P (parameters, gradients, Adam moments) + P (EMA weights) + peak "
                          "bytes saved for backward + input rows + noise draws; meta device, "
                          "CPU attention kernel"}


def table(result: dict[str, Any]) -> str:
    lines = [f"{'model':>5} {'depth':>5} {'B':>3} {'e2e MiB':>10} {'e2e ckpt MiB':>13} "
             f"{'block MiB':>10} {'block ckpt MiB':>15} {'stem+head MiB':>14} "
             f"{'e2e/block':>9} {'/B':>5}"]
    for r in result["rows"]:
        lines.append(f"{r['model']:>5} {r['depth']:>5} {r['blocks']:>3} {mib(r['e2e_bytes']):>10} "
                     f"{mib(r['e2e_checkpointed_bytes']):>13} {mib(r['block_bytes']):>10} "
                     f"{mib(r['block_checkpointed_bytes']):>15} "
                     f"{mib(r['stem_bytes']):>14} {r['ratio']:>9.2f} "
                     f"{r['ratio'] / r['blocks']:>5.2f}")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in result["rows"]))
    fig, axes = plt.subplots(1, len(models), figsize=(4.5 * len(models), 3.8), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        for depth, style in zip(sorted({r["depth"] for r in result["rows"]}), ("-", "--"),
                                strict=False):
            rows = [r for r in result["rows"] if r["model"] == model and r["depth"] == depth]
            bs = [r["blocks"] for r in rows]
            ax.plot(bs, [r["block_bytes"] / 2**30 for r in rows], "o" + style,
                    label=f"one block, L={depth}")
            ax.plot(bs, [r["block_checkpointed_bytes"] / 2**30 for r in rows], "s" + style,
                    color="green", label=f"one block, checkpointed, L={depth}")
            ax.plot(bs, [r["e2e_bytes"] / r["blocks"] / 2**30 for r in rows], style,
                    color="gray", label=f"end to end / B, L={depth}")
            ax.axhline(rows[0]["e2e_checkpointed_bytes"] / 2**30, ls=style, color="red", lw=0.8,
                       label=f"end to end, checkpointed, L={depth}")
        ax.set(xscale="log", yscale="log", xlabel="blocks B", ylabel="GiB per training step",
               title=result["setups"][model])
        ax.set_xticks(BLOCKS, [str(b) for b in BLOCKS])
        ax.title.set_fontsize(8)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    args = parser(__doc__.split("\n")[0]).parse_args()
    finish("memory", run(args.quick), args, table, plot)


if __name__ == "__main__":
    main()
