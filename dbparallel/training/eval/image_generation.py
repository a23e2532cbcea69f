"""Evaluation of the composed image generator: samples scored by a classifier of the data."""

from __future__ import annotations

import pyarrow as pa
import torch

from dbparallel.config import Config
from dbparallel.data.splits import eval_rows
from dbparallel.data.tables import image_tensors
from dbparallel.models.block import Block
from dbparallel.tasks import Task
from dbparallel.training.eval.classifier import FeatureClassifier, accuracy, cached_classifier
from dbparallel.training.eval.frechet import frechet_distance
from dbparallel.training.eval.png import encode_png, grid
from dbparallel.training.seeding import generator


@torch.no_grad()
def generate_labelled(cfg: Config, task: Task, nets: list[Block], labels: torch.Tensor,
                      purpose: str, chunk: int = 256) -> torch.Tensor:
    """Images for ``labels``, generated in chunks with a seed fixed by ``purpose``."""
    out = []
    for i in range(0, len(labels), chunk):
        g = generator(cfg.run.seed, purpose, i)
        out.append(task.generate(nets, labels[i:i + chunk], g).cpu())
    return torch.cat(out)


def indomain_classifier(cfg: Config, task: Task, table: pa.Table) -> FeatureClassifier:
    """The data's own classifier (trained on the training rows on first use, then cached)."""
    data = task.prepare(table)
    return cached_classifier(data_key(cfg), (data["image"] + 1) / 2, data["label"],
                             cfg.data.num_classes)


def data_key(cfg: Config) -> dict:
    """What identifies the image data in the caches of its classifier and Inception features."""
    d = cfg.data
    return {"source": d.source, "path": d.path, "size": d.image_size, "channels": d.channels,
            "classes": d.num_classes}


def eval_samples(cfg: Config, task: Task, nets: list[Block],
                 device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(images in [0, 1], labels): ``sample.eval_samples`` images, classes in turn."""
    wanted = torch.arange(cfg.sample.eval_samples) % cfg.data.num_classes
    return generate_labelled(cfg, task, nets, wanted.to(device), "eval"), wanted


def score(cfg: Config, task: Task, table: pa.Table, fake: torch.Tensor, wanted: torch.Tensor,
          device: str = "cpu") -> dict[str, float]:
    """Sample accuracy and in-domain Fréchet distance of class-conditional images ``fake``
    (in [0, 1]), and with ``sample.fid`` FID and KID; references are the held-out (test) rows
    where there are any."""
    held_out, held_out_labels = image_tensors(eval_rows(table), cfg.data)
    clf = indomain_classifier(cfg, task, table)
    with torch.no_grad():
        fd = frechet_distance(clf.features(held_out), clf.features(fake))
    metrics = {"sample_accuracy": accuracy(clf, fake, wanted), "fd_indomain": fd,
               "classifier_accuracy": accuracy(clf, held_out, held_out_labels)}
    if cfg.sample.fid:
        from dbparallel.training.eval.inception import fid_kid

        metrics.update(fid_kid(data_key(cfg), held_out, fake, cfg.run.seed, device))
    return metrics


def evaluate(cfg: Config, task: Task, nets: list[Block], table: pa.Table,
             device: str = "cpu") -> dict[str, float]:
    """``score`` of ``eval_samples``: the composed generator's metrics."""
    return score(cfg, task, table, *eval_samples(cfg, task, nets, device), device)


def sample_png(cfg: Config, task: Task, nets: list[Block], device: str = "cpu") -> bytes:
    """A PNG grid of samples, one row per class."""
    k, classes = cfg.sample.per_class, cfg.data.num_classes
    labels = torch.arange(classes).repeat_interleave(k).to(device)
    images = generate_labelled(cfg, task, nets, labels, "grid")
    scale = max(1, 64 // cfg.data.image_size)
    return encode_png(grid(images, rows=classes), scale=scale)
