"""Evaluation of a composed network, by task: metrics and a sample artifact."""

from __future__ import annotations

from dbparallel.config import Config
from dbparallel.data.shards import DataIndex
from dbparallel.models.block import Block
from dbparallel.tasks import Task


def evaluate(cfg: Config, task: Task, nets: list[Block], index: DataIndex,
             device: str = "cpu") -> dict[str, float | None]:
    """The task's quality metrics of the composed network (report.json ``assembly``)."""
    if cfg.task == "dit":
        from dbparallel.training.eval import image_generation

        return image_generation.evaluate(cfg, task, nets, index, device)
    if cfg.task == "vit":
        from dbparallel.training.eval import classification

        return classification.evaluate(cfg, task, nets, index, device)
    if cfg.task in ("mdm", "ar", "looped"):
        from dbparallel.training.eval import text

        return text.evaluate(cfg, task, nets, index, device)
    raise ValueError(f"task: no evaluation for {cfg.task!r}")


def sample_artifact(cfg: Config, task: Task, nets: list[Block], device: str = "cpu",
                    index: DataIndex | None = None) -> tuple[str, bytes]:
    """(file name, contents) of the samples written into the run directory; ``index`` is the
    run's data where a task's artifact needs it (opened from the config when not given)."""
    if cfg.task == "dit":
        from dbparallel.training.eval import image_generation

        if cfg.data.latents and not cfg.sample.decoder:
            return "samples.safetensors", image_generation.sample_latents(cfg, task, nets,
                                                                          device)
        return "samples.png", image_generation.sample_png(cfg, task, nets, device)
    if cfg.task == "vit":
        from dbparallel.training.eval import classification

        return "confusion.json", classification.confusion_json(cfg, task, nets, device, index)
    if cfg.task in ("mdm", "ar", "looped"):
        from dbparallel.training.eval import text

        return "samples.txt", text.sample_text(cfg, task, nets, device, index)
    raise ValueError(f"task: no samples for {cfg.task!r}")
