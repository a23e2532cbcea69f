"""Tasks: what a block denoises, its loss, and how the composed network is used."""

from __future__ import annotations

from dbparallel.config import Config
from dbparallel.tasks.base import Task


def unused_blocks_warning(cfg: Config, task: Task | None = None) -> str | None:
    """What a run says before it trains where the config's sampler never runs a block (fewer
    sample.steps than blocks; ViT's chain on a log-uniform partition of more than 4 blocks):
    that block would train for nothing. None where it runs every block. ``task``: cfg's, where
    it is built already."""
    ran = (task or build_task(cfg, shapes_only=True)).inference_blocks()
    never = sorted(set(range(cfg.model.blocks)) - set(ran))
    if not never:
        return None
    which = (f"blocks {', '.join(map(str, never))} train but never run" if len(never) > 1
             else f"block {never[0]} trains but never runs")
    if cfg.task == "vit":
        how = (f"its chain of max(B, 2) = {len(ran)} steps on the equi-probability schedule, "
               f"with noise.partition={cfg.noise.partition}")
        fix = "noise.partition=equiprobable runs each block once"
    else:
        schedule = "" if cfg.task == "mdm" else f" on the {cfg.sample.schedule} schedule"
        how = f"sample.steps={cfg.sample.steps}{schedule}"
        fix = f"raise sample.steps (to at least {cfg.model.blocks})"
    return (f"task={cfg.task}, model.blocks={cfg.model.blocks}: its sampler, {how}, runs "
            f"{'blocks' if len(ran) > 1 else 'block'} {', '.join(map(str, ran))}: {which} when "
            f"sampling; {fix}")


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
