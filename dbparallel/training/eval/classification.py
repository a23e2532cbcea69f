"""Evaluation of the composed classifier: accuracy on the held-out (test) rows."""

from __future__ import annotations

import json

import torch

from dbparallel.config import Config
from dbparallel.data.shards import DataIndex
from dbparallel.data.split_reader import iter_chunks
from dbparallel.errors import RowError
from dbparallel.models.block import Block
from dbparallel.tasks import Task
from dbparallel.training.seeding import generator


@torch.no_grad()
def predictions(cfg: Config, task: Task, nets: list[Block], index: DataIndex,
                device: str = "cpu", chunk: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted, true) labels (N,) of the held-out rows (``DataIndex.eval_rows``), streamed
    in chunks with fixed noise."""
    predicted, true = [], []
    for part in iter_chunks(index, index.eval_split, chunk, task.columns,
                            index.eval_rows(cfg.sample.eval_rows)):
        try:
            data = task.decode(part.table, device)
        except RowError as err:
            raise err.at(part.where(err.row)) from None
        logits = task.predict(nets, data["image"], generator(cfg.run.seed, "predict",
                                                             part.offset))
        predicted.append(logits.argmax(dim=1).cpu())
        true.append(data["label"].cpu())
    return torch.cat(predicted), torch.cat(true)


def accuracy(predicted: torch.Tensor, true: torch.Tensor) -> float:
    """Fraction of rows whose predicted label is the true one."""
    return float((predicted == true).double().mean())


def confusion(predicted: torch.Tensor, true: torch.Tensor, classes: int) -> torch.Tensor:
    """(classes, classes) counts; row = true class, column = predicted class."""
    return torch.bincount(true * classes + predicted, minlength=classes * classes).view(
        classes, classes)


def evaluate(cfg: Config, task: Task, nets: list[Block], index: DataIndex,
             device: str = "cpu") -> dict[str, float]:
    """Test accuracy of the composed network (report.json ``assembly.accuracy``)."""
    predicted, true = predictions(cfg, task, nets, index, device)
    return {"accuracy": accuracy(predicted, true), "eval_rows": len(true),
            "eval_on_test": int(index.eval_split == "test")}


def confusion_json(cfg: Config, task: Task, nets: list[Block], device: str = "cpu",
                   index: DataIndex | None = None) -> bytes:
    """The confusion matrix of the held-out rows of ``index`` (else of the configured data)
    as JSON, with the classes' names by label where the data name them."""
    from dbparallel.data.reshard import class_names

    if index is None:
        from dbparallel.data.sources import open_data

        index = open_data(cfg.data)
    predicted, true = predictions(cfg, task, nets, index, device)
    matrix = confusion(predicted, true, cfg.data.num_classes)
    names = class_names(index)
    return json.dumps({"rows": "true class", "columns": "predicted class",
                       "accuracy": accuracy(predicted, true),
                       "confusion": matrix.tolist(),
                       **({"classes": names} if names else {})}).encode()
