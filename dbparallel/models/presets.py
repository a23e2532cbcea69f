"""Named model sizes; config fields left unset take the preset's value."""

from __future__ import annotations

from dataclasses import dataclass

from dbparallel.config import ModelConfig


@dataclass(frozen=True)
class ModelDims:
    """Resolved width of a model: token width, heads, MLP ratio, layers per block."""

    hidden: int
    heads: int
    mlp_ratio: float
    layers: int


# (hidden, heads, mlp_ratio); DiT sizes as in Peebles & Xie (2023), Table 1.
PRESETS: dict[str, tuple[int, int, float]] = {
    "tiny": (64, 4, 4.0),
    "small": (128, 4, 4.0),
    "base": (256, 8, 4.0),
    "dit-s": (384, 6, 4.0),
    "dit-b": (768, 12, 4.0),
    "dit-l": (1024, 16, 4.0),
}


def resolve(model: ModelConfig) -> ModelDims:
    """The dims of one block of ``model``: preset values under explicit overrides."""
    hidden, heads, mlp_ratio = PRESETS[model.preset]
    hidden = model.hidden or hidden
    heads = model.heads or heads
    if hidden % heads:
        raise ValueError(f"model.heads: hidden width {hidden} is not divisible by {heads} heads")
    return ModelDims(hidden, heads, model.mlp_ratio or mlp_ratio, model.layers_per_block)
