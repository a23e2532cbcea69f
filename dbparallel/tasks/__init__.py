"""Tasks: what a block denoises, its loss, and how the composed network is used."""

from __future__ import annotations

from dbparallel.config import Config
from dbparallel.tasks.base import Task


def build_task(cfg: Config) -> Task:
    """The task named by ``cfg.task``."""
    if cfg.task == "dit":
        from dbparallel.tasks.image_generation import ImageGeneration

        return ImageGeneration(cfg)
    raise ValueError(f"task: unknown task {cfg.task!r}")
