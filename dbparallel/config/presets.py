"""Named model sizes (model.preset) and what the models need of the width they resolve to:
checked as the config loads, so a width no model can be built with is a ConfigError."""

from __future__ import annotations

from typing import Protocol

from dbparallel.config.checks import check


class ModelConfig(Protocol):
    """The keys of the model section (config/schema.py) these checks read."""

    preset: str
    hidden: int | None
    heads: int | None
    mlp_ratio: float | None

# (hidden, heads, mlp_ratio); DiT sizes as in Peebles & Xie (2023), Table 1.
PRESET_DIMS: dict[str, tuple[int, int, float]] = {
    "tiny": (64, 4, 4.0),
    "small": (128, 4, 4.0),
    "base": (256, 8, 4.0),
    "dit-s": (384, 6, 4.0),
    "dit-b": (768, 12, 4.0),
    "dit-l": (1024, 16, 4.0),
    "dit-xl": (1152, 16, 4.0),
}
IMAGE_TASKS = ("dit", "vit")  # 2-D sine-cosine positions: a quarter of the width per sin/cos axis


def width(model: ModelConfig) -> tuple[int, int, float]:
    """(hidden, heads, mlp_ratio) of ``model``: its preset's values under the ones it sets."""
    hidden, heads, mlp_ratio = PRESET_DIMS[model.preset]
    return model.hidden or hidden, model.heads or heads, model.mlp_ratio or mlp_ratio


def check_width(model: ModelConfig) -> None:
    """ConfigError naming model.hidden or model.heads (the one set) unless both are > 0 and
    the width the preset resolves to splits into its heads."""
    check(model.hidden is None or model.hidden > 0, "model.hidden", "must be > 0")
    check(model.heads is None or model.heads > 0, "model.heads", "must be > 0")
    hidden, heads, _ = width(model)
    of = f" (model.preset={model.preset})" if model.hidden is None else ""
    if model.hidden is not None and model.heads is None:
        check(hidden % heads == 0, "model.hidden",
              f"{hidden} is not divisible by the {heads} heads of model.preset={model.preset}; "
              f"use a multiple of {heads} or set model.heads")
    check(hidden % heads == 0, "model.heads",
          f"model.hidden={hidden}{of} is not divisible by {heads} heads")


def check_task_width(model: ModelConfig, task: str) -> None:
    """ConfigError unless ``task``'s model can use the width: image tasks need model.hidden
    divisible by 4 (2-D sine-cosine positions), text tasks an even head width (rotary)."""
    hidden, heads, _ = width(model)
    if task in IMAGE_TASKS:
        check(hidden % 4 == 0, "model.hidden",
              f"task={task} needs a multiple of 4 (2-D sine-cosine position embedding: a "
              f"quarter of the width per sin/cos of each axis), got {hidden}")
    else:
        check((hidden // heads) % 2 == 0, "model.heads",
              f"task={task} needs an even head width model.hidden / model.heads (rotary "
              f"positions), got {hidden} / {heads} = {hidden // heads}")
