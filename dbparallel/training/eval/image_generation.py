"""Evaluation of the composed image generator: samples scored by a classifier of the data."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
import torch

from dbparallel.config import Config
from dbparallel.data.shards import DataIndex
from dbparallel.data.split_reader import iter_chunks, take_rows
from dbparallel.errors import RowError
from dbparallel.models.block import Block
from dbparallel.tasks import Task
from dbparallel.training.data_order import DataOrder
from dbparallel.training.eval.classifier import BATCH, FeatureClassifier, cached_classifier
from dbparallel.training.eval.decoder import decode_latents
from dbparallel.training.eval.frechet import frechet_distance
from dbparallel.training.eval.png import encode_png, grid
from dbparallel.training.seeding import generator
from dbparallel.training.stream import BlockStream

CHUNK = 1000  # held-out rows scored at a time
CLASSIFIER_STREAM = -1  # the data order of the classifier's training (no block has it)


@torch.no_grad()
def generate_labelled(cfg: Config, task: Task, nets: list[Block], labels: torch.Tensor,
                      purpose: str, chunk: int = 256) -> torch.Tensor:
    """Images for ``labels``, generated in chunks with a seed fixed by ``purpose``."""
    out = []
    for i in range(0, len(labels), chunk):
        g = generator(cfg.run.seed, purpose, i)
        out.append(task.generate(nets, labels[i:i + chunk], g).cpu())
    return torch.cat(out)


def indomain_classifier(cfg: Config, task: Task, index: DataIndex) -> FeatureClassifier:
    """The data's own classifier (trained on a stream of the training rows on first use,
    then cached)."""
    order = DataOrder([s.rows for s in index.shards("train")], BATCH, 0, CLASSIFIER_STREAM,
                      cfg.data.window_shards)
    stream = BlockStream(index, "train", order, task, "cpu", prefetch=False)

    def batches(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        data = stream.batch(step)
        return (data["image"] + 1) / 2, data["label"]

    d = cfg.data
    key = {**data_key(cfg), "data": index.fingerprint}
    try:
        return cached_classifier(key, batches, d.channels * d.image_size ** 2, d.num_classes)
    finally:
        stream.close()


def data_key(cfg: Config) -> dict:
    """What identifies the image data in the cache of its classifier (with the data's
    fingerprint)."""
    d = cfg.data
    key = {"source": d.source, "path": d.path, "size": d.image_size, "channels": d.channels,
           "classes": d.num_classes}
    return key | ({"latents": [d.latent_scale, d.latent_shift]}
                  if d.latents else {})


def eval_samples(cfg: Config, task: Task, nets: list[Block],
                 device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(images in [0, 1], labels): ``sample.eval_samples`` images, classes in turn."""
    wanted = torch.arange(cfg.sample.eval_samples) % cfg.data.num_classes
    return generate_labelled(cfg, task, nets, wanted.to(device), "eval"), wanted


def images_of(task: Task, table: pa.Table, where: Callable[[int], str] | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(images in [0, 1], labels) of some rows, on the CPU (latents: as the in-domain
    classifier reads them, ImageData.scored)."""
    try:
        data = task.decode(table, "cpu")
    except RowError as err:
        raise (err.at(where(err.row)) if where else err) from None
    return (data["image"] + 1) / 2, data["label"]


@torch.no_grad()
def held_out_features(task: Task, clf: FeatureClassifier, index: DataIndex,
                      rows: int) -> tuple[torch.Tensor, float]:
    """The classifier's features (N, F) of the first ``rows`` held-out rows, streamed in
    chunks, and its accuracy on them."""
    features, correct = [], 0
    for part in iter_chunks(index, index.eval_split, CHUNK, task.columns, rows):
        images, labels = images_of(task, part.table, part.where)
        features.append(clf.features(images))
        correct += int((clf.out(features[-1]).argmax(1) == labels).sum())
    held = torch.cat(features)
    return held, correct / len(held)


def score(cfg: Config, task: Task, index: DataIndex, fake: torch.Tensor, wanted: torch.Tensor,
          device: str = "cpu") -> dict[str, float | None]:
    """Sample accuracy and in-domain Fréchet distance of class-conditional images ``fake``
    (in [0, 1]; latents as stored), and with ``sample.fid`` FID and KID; references are the
    held-out (test) rows where there are any (``eval_on_test`` 0: the training rows), read in
    chunks (FID reads only the rows it compares)."""
    clf = indomain_classifier(cfg, task, index)
    real_features, classifier_accuracy = held_out_features(
        task, clf, index, index.eval_rows(cfg.sample.eval_rows))
    with torch.no_grad():
        fake_features = clf.features(task.scored(fake))
        sample_accuracy = float((clf.out(fake_features).argmax(1) == wanted).float().mean())
    metrics = {"sample_accuracy": sample_accuracy,
               "fd_indomain": frechet_distance(real_features, fake_features),
               "classifier_accuracy": classifier_accuracy,
               # the reference rows: how many, and whether held out (else training rows)
               "eval_rows": len(real_features),
               "eval_on_test": int(index.eval_split == "test")}
    if cfg.sample.fid:
        from dbparallel.training.eval.inception import fid_kid, fid_reference_rows

        pick = fid_reference_rows(index.num_rows(index.eval_split), len(fake), cfg.run.seed)
        rows = take_rows(index, index.eval_split, pick.numpy(), task.columns)
        if cfg.data.latents:  # both decoded by sample.decoder (check_latents)
            real = decode_latents(cfg.sample.decoder,
                                  task.to_stored(task.decode(rows, "cpu")["image"]), device)
            fake = decode_latents(cfg.sample.decoder, fake, device)
        else:
            real, _ = images_of(task, rows)
        metrics.update(fid_kid(real, fake, cfg.run.seed, device))
    return metrics


def evaluate(cfg: Config, task: Task, nets: list[Block], index: DataIndex,
             device: str = "cpu") -> dict[str, float | None]:
    """``score`` of ``eval_samples``: the composed generator's metrics."""
    return score(cfg, task, index, *eval_samples(cfg, task, nets, device), device)


def sample_png(cfg: Config, task: Task, nets: list[Block], device: str = "cpu") -> bytes:
    """A PNG grid of samples, one row per class (latents decoded by sample.decoder)."""
    labels, images = _grid_samples(cfg, task, nets, device)
    if cfg.data.latents:
        images = decode_latents(cfg.sample.decoder, images, device)
    scale = max(1, 64 // images.shape[-1])
    return encode_png(grid(images, rows=cfg.data.num_classes), scale=scale)


def sample_latents(cfg: Config, task: Task, nets: list[Block], device: str = "cpu") -> bytes:
    """The samples of a network of latents (data.latents), as stored for the autoencoder to
    decode: a safetensors file of ``latents`` (N, C, H, W) float32 and their ``labels`` (N,)
    int64, sample.per_class of each class in turn, the data's shift and scale in its
    metadata."""
    from safetensors.torch import save

    labels, latents = _grid_samples(cfg, task, nets, device)
    d = cfg.data
    return save({"latents": latents.float().contiguous(), "labels": labels.cpu()},
                metadata={"latent_scale": repr(d.latent_scale),
                          "latent_shift": repr(d.latent_shift),
                          "note": "latents as the data store them: decode with the "
                                  "autoencoder that encoded the data"})


def _grid_samples(cfg: Config, task: Task, nets: list[Block],
                  device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels, images) of sample.per_class samples of each class in turn (seed "grid")."""
    labels = torch.arange(cfg.data.num_classes).repeat_interleave(cfg.sample.per_class)
    return labels, generate_labelled(cfg, task, nets, labels.to(device), "grid")
