"""Tasks: what a block denoises, its loss, and how the composed network is used."""

from __future__ import annotations

from dbparallel.config import Config
from dbparallel.tasks.base import Task


def build_task(cfg: Config, shapes_only: bool = False) -> Task:
    """The task named by ``cfg.task``; ``shapes_only``: its frozen table (vit, ar, looped) on
    the meta device, for steps counted from shapes alone (tasks/frozen_table.py)."""
    if cfg.task == "dit":
        from dbparallel.tasks.image_generation import ImageGeneration

        return ImageGeneration(cfg)
    if cfg.task == "vit":
        from dbparallel.tasks.classification import Classification

        return Classification(cfg, shapes_only)
    if cfg.task == "mdm":
        from dbparallel.tasks.masked_lm import MaskedDiffusionLM

        return MaskedDiffusionLM(cfg)
    if cfg.task == "ar":
        from dbparallel.tasks.autoregressive import AutoregressiveLM

        return AutoregressiveLM(cfg, shapes_only)
    if cfg.task == "looped":
        from dbparallel.tasks.looped import LoopedLM

        return LoopedLM(cfg, shapes_only)
    raise ValueError(f"task: unknown task {cfg.task!r}")
