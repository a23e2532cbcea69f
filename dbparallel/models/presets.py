"""Named model sizes; config fields left unset take the preset's value (the table and its
checks are the config's: config/presets.py)."""

from __future__ import annotations

from dataclasses import dataclass

from dbparallel.config import ModelConfig
from dbparallel.config.presets import PRESET_DIMS as PRESETS
from dbparallel.config.presets import check_width, width

__all__ = ["PRESETS", "ModelDims", "resolve"]


@dataclass(frozen=True)
class ModelDims:
    """Resolved width of a model: token width, heads, MLP ratio, layers per block."""

    hidden: int
    heads: int
    mlp_ratio: float
    layers: int


def resolve(model: ModelConfig) -> ModelDims:
    """The dims of one block of ``model``: preset values under explicit overrides;
    ConfigError naming model.hidden or model.heads if they do not fit together."""
    check_width(model)  # a ModelConfig changed after it loaded is checked again here
    hidden, heads, mlp_ratio = width(model)
    return ModelDims(hidden, heads, mlp_ratio, model.layers_per_block)
