"""Compose the blocks of a run from their snapshots and evaluate the composed network."""

from __future__ import annotations

import pyarrow as pa
import torch

from dbparallel.config import Config, config_hash, identity_diff, to_dict
from dbparallel.errors import RunDirError
from dbparallel.models.block import Block
from dbparallel.tasks import Task, build_task
from dbparallel.training.checkpoint import BlockCheckpoints
from dbparallel.training.eval.classifier import accuracy, cached_classifier
from dbparallel.training.eval.frechet import frechet_distance
from dbparallel.training.eval.png import encode_png, grid
from dbparallel.training.seeding import generator
from dbparallel.training.storage import Storage


def load_snapshots(cfg: Config, storage: Storage) -> list[dict]:
    """The latest good snapshot of every block; refuses missing or disagreeing blocks."""
    snapshots = [BlockCheckpoints(storage, b).load_latest("snapshot")
                 for b in range(cfg.model.blocks)]
    missing = [b for b, s in enumerate(snapshots) if s is None]
    if missing:
        raise RunDirError(f"{storage.uri()}: block(s) {missing} have no snapshot yet; "
                          f"train them first (dbparallel train ... run.dir={storage.uri()})")
    partition = build_task(cfg).partition.to_json()
    for b, snap in enumerate(snapshots):
        meta = snap["meta"]
        if meta["block"] != b or meta["task"] != cfg.task:
            raise RunDirError(f"block {b}: snapshot is of block {meta['block']} of task "
                              f"{meta['task']!r}, expected block {b} of task {cfg.task!r}")
        if meta["config_hash"] != config_hash(cfg):
            keys = identity_diff(meta["config"], to_dict(cfg))
            raise RunDirError(f"block {b}: trained with other values of {', '.join(keys)}")
        if meta["partition"] != partition:
            raise RunDirError(f"block {b}: its noise partition {meta['partition']['ranges']} "
                              f"disagrees with {partition['ranges']}")
    return snapshots


def compose(task: Task, snapshots: list[dict], device: str = "cpu") -> list[Block]:
    """The block networks with their EMA weights, block 0 first."""
    nets = []
    for b, snap in enumerate(snapshots):
        net = task.build_block(b)
        net.load_state_dict(snap["ema"])
        nets.append(net.to(device).eval())
    return nets


@torch.no_grad()
def generate_labelled(cfg: Config, task: Task, nets: list[Block], labels: torch.Tensor,
                      purpose: str, chunk: int = 256) -> torch.Tensor:
    """Images for ``labels``, generated in chunks with a seed fixed by ``purpose``."""
    out = []
    for i in range(0, len(labels), chunk):
        g = generator(cfg.run.seed, purpose, i)
        out.append(task.generate(nets, labels[i:i + chunk], g).cpu())
    return torch.cat(out)


def evaluate(cfg: Config, task: Task, nets: list[Block], table: pa.Table,
             device: str = "cpu") -> dict[str, float]:
    """Sample accuracy and in-domain Fréchet distance of class-conditional samples."""
    data = task.prepare(table)
    real, labels = (data["image"] + 1) / 2, data["label"]
    d = cfg.data
    key = {"source": d.source, "path": d.path, "size": d.image_size, "channels": d.channels,
           "classes": d.num_classes}
    clf = cached_classifier(key, real, labels, d.num_classes)
    n = cfg.sample.eval_samples
    wanted = torch.arange(n) % d.num_classes
    fake = generate_labelled(cfg, task, nets, wanted.to(device), "eval")
    with torch.no_grad():
        fd = frechet_distance(clf.features(real), clf.features(fake))
    return {"sample_accuracy": accuracy(clf, fake, wanted), "fd_indomain": fd,
            "classifier_accuracy": accuracy(clf, real, labels)}


def sample_png(cfg: Config, task: Task, nets: list[Block], device: str = "cpu") -> bytes:
    """A PNG grid of samples, one row per class."""
    k, classes = cfg.sample.per_class, cfg.data.num_classes
    labels = torch.arange(classes).repeat_interleave(k).to(device)
    images = generate_labelled(cfg, task, nets, labels, "grid")
    scale = max(1, 64 // cfg.data.image_size)
    return encode_png(grid(images, rows=classes), scale=scale)


def assemble(cfg: Config, storage: Storage, table: pa.Table, device: str = "cpu",
             write_samples: bool = True) -> dict[str, float]:
    """Load, compose and evaluate every block; optionally write samples.png."""
    task = build_task(cfg)
    snapshots = load_snapshots(cfg, storage)
    nets = compose(task, snapshots, device)
    metrics = evaluate(cfg, task, nets, table, device)
    metrics["block_steps_min"] = min(s["meta"]["step"] for s in snapshots)
    if write_samples:
        storage.write_bytes("samples.png", sample_png(cfg, task, nets, device))
    return metrics
