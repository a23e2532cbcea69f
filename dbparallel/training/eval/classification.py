"""Evaluation of the composed classifier: accuracy on the held-out (test) rows."""

from __future__ import annotations

import json

import pyarrow as pa
import torch

from dbparallel.config import Config
from dbparallel.data.splits import eval_rows
from dbparallel.models.block import Block
from dbparallel.tasks import Task
from dbparallel.training.seeding import generator


@torch.no_grad()
def predictions(cfg: Config, task: Task, nets: list[Block], table: pa.Table,
                device: str = "cpu", chunk: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted, true) labels (N,) of every held-out row, in chunks with fixed noise."""
    data = task.prepare_eval(eval_rows(table))
    predicted = []
    for i in range(0, len(data["label"]), chunk):
        images = data["image"][i:i + chunk].to(device)
        logits = task.predict(nets, images, generator(cfg.run.seed, "predict", i))
        predicted.append(logits.argmax(dim=1).cpu())
    return torch.cat(predicted), data["label"]


def accuracy(predicted: torch.Tensor, true: torch.Tensor) -> float:
    """Fraction of rows whose predicted label is the true one."""
    return float((predicted == true).double().mean())


def confusion(predicted: torch.Tensor, true: torch.Tensor, classes: int) -> torch.Tensor:
    """(classes, classes) counts; row = true class, column = predicted class."""
    return torch.bincount(true * classes + predicted, minlength=classes * classes).view(
        classes, classes)


def evaluate(cfg: Config, task: Task, nets: list[Block], table: pa.Table,
             device: str = "cpu") -> dict[str, float]:
    """Test accuracy of the composed network (report.json ``assembly.accuracy``)."""
    predicted, true = predictions(cfg, task, nets, table, device)
    return {"accuracy": accuracy(predicted, true), "eval_rows": float(len(true))}


def confusion_json(cfg: Config, task: Task, nets: list[Block], device: str = "cpu",
                   table: pa.Table | None = None) -> bytes:
    """The confusion matrix of the held-out rows of ``table`` (else of the configured data,
    read again) as JSON."""
    if table is None:
        from dbparallel.data.sources import load_table

        table = load_table(cfg.data)
    predicted, true = predictions(cfg, task, nets, table, device)
    matrix = confusion(predicted, true, cfg.data.num_classes)
    return json.dumps({"rows": "true class", "columns": "predicted class",
                       "accuracy": accuracy(predicted, true),
                       "confusion": matrix.tolist()}).encode()
