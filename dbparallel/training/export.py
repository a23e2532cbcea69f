"""One file for a trained network: every block's EMA weights, the config and the partition.

The file is safetensors: tensors ``block_<b>/<name>`` (no pickled code, readable without this
project), and string metadata:

- ``format``: ``dbparallel-export/1``; ``task``; ``config``: the resolved config (YAML);
- ``partition``: the noise partition (JSON); ``steps``: each block's training step (JSON);
- ``tokenizer``: the text tasks' tokenizer (JSON, as vocab.json);
- ``class_names``: the names of the labels, by label, where the run's data name them (JSON);
- ``sha256``: a checksum of every tensor's name, dtype, shape and bytes, in name order, that
  ``read_export`` verifies;
- ``meta_sha256``: a checksum of every other metadata entry, verified where present (exports
  written before it was added have none, and load as they did).

Reading one needs neither Ray nor the run directory nor the data. A file whose metadata is
damaged (a part missing, not parseable, or disagreeing with the config or the tensors) is
refused with a RunDirError naming the file and the part.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import torch

from dbparallel.config import Config, dump_yaml, from_dict, stored_dict
from dbparallel.core.partition import Partition
from dbparallel.errors import RunDirError

FORMAT = "dbparallel-export/1"
META_SUM = "meta_sha256"
REQUIRED = ("task", "config", "partition", "steps", "sha256")  # every export has written them


@dataclass
class Exported:
    """What an export holds."""

    cfg: Config
    weights: list[dict[str, torch.Tensor]]  # block 0 first
    steps: list[int]
    tokenizer: dict[str, Any] | None
    class_names: list[str]


def checksum(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 of every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def meta_checksum(meta: dict[str, str]) -> str:
    """sha256 of every metadata entry but ``meta_sha256`` itself, in key order."""
    entries = sorted((k, v) for k, v in meta.items() if k != META_SUM)
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


def export_bytes(cfg: Config, weights: list[dict[str, torch.Tensor]], steps: list[int],
                 partition: dict, tokenizer: dict[str, Any] | None,
                 class_names: list[str] | None = None) -> bytes:
    """The export file's contents."""
    from safetensors.torch import save

    # clones: tied or shared tensors of a state dict cannot be saved as views of one storage
    tensors = {f"block_{b}/{name}": t.detach().cpu().clone().contiguous()
               for b, state in enumerate(weights) for name, t in state.items()}
    meta = {"format": FORMAT, "task": cfg.task, "config": dump_yaml(cfg),
            "partition": json.dumps(partition), "steps": json.dumps(steps),
            "sha256": checksum(tensors)}
    if tokenizer is not None:
        meta["tokenizer"] = json.dumps(tokenizer)
    if class_names:
        meta["class_names"] = json.dumps(class_names)
    meta[META_SUM] = meta_checksum(meta)
    return save(tensors, metadata=meta)


def read_export(data: bytes, where: str) -> Exported:
    """The contents of an export file; RunDirError naming ``where`` if it is not one, a
    checksum disagrees, or a part of its metadata is damaged."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        tensors = load(data)
        meta = _metadata(data)
    except (SafetensorError, ValueError, json.JSONDecodeError) as err:
        raise RunDirError(f"{where}: not a dbparallel export: not a safetensors file (an "
                          f"export is one, written by `dbparallel export`; the reader said: "
                          f"{err})") from None
    if meta.get("format") != FORMAT:
        raise RunDirError(f"{where}: not a dbparallel export (format "
                          f"{meta.get('format')!r}, expected {FORMAT!r})")
    missing = [key for key in REQUIRED if key not in meta]
    if missing:
        raise damaged_export(where, "metadata", f"no {', '.join(map(repr, missing))} entry")
    if checksum(tensors) != meta["sha256"]:
        raise RunDirError(f"{where}: the weights do not match the file's checksum "
                          "(damaged in transit?); export the run again")
    if META_SUM in meta and meta_checksum(meta) != meta[META_SUM]:
        raise damaged_export(where, "metadata", "it does not match the file's checksum (damaged "
                      "in transit?); export the run again")
    cfg, partition = _config(meta["config"], where)
    if meta["task"] != cfg.task:
        raise damaged_export(where, "metadata 'task'",
                      f"{meta['task']!r}, while its config's task is {cfg.task!r}")
    if not Partition.agree(_json(meta, "partition", where), partition):
        raise damaged_export(where, "metadata 'partition'",
                      "it disagrees with the partition its config makes")
    steps = _json(meta, "steps", where)
    if (not isinstance(steps, list) or len(steps) != cfg.model.blocks
            or not all(type(s) is int and s >= 0 for s in steps)):
        raise damaged_export(where, "metadata 'steps'", f"{meta['steps'][:80]!r} is not a list "
                      f"of {cfg.model.blocks} steps (model.blocks of its config)")
    tokenizer = _json(meta, "tokenizer", where) if "tokenizer" in meta else None
    if tokenizer is not None and not isinstance(tokenizer, dict):
        raise damaged_export(where, "metadata 'tokenizer'", "not a JSON object")
    names = _json(meta, "class_names", where) if "class_names" in meta else []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise damaged_export(where, "metadata 'class_names'", "not a JSON list of names")
    return Exported(cfg, _blocks(tensors, len(steps), where), steps, tokenizer, names)


def damaged_export(where: str, part: str, detail: str) -> RunDirError:
    """The error for an export whose ``part`` (metadata, metadata 'steps', ...) is damaged."""
    return RunDirError(f"{where}: not a readable dbparallel export; damaged {part}: {detail}")


def _metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file (its header: 8-byte length, then JSON)."""
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + size]).get("__metadata__") or {}


def _json(meta: dict[str, str], key: str, where: str) -> Any:
    try:
        return json.loads(meta[key])
    except json.JSONDecodeError as err:
        raise damaged_export(where, f"metadata {key!r}", f"not JSON: {err}") from None


def _config(text: str, where: str) -> tuple[Config, dict]:
    """The config of an export's metadata and the partition it makes."""
    from omegaconf.errors import OmegaConfBaseException

    from dbparallel.tasks import build_task

    try:
        cfg = from_dict(stored_dict(text))
        return cfg, build_task(cfg).partition.to_json()
    except OmegaConfBaseException as err:
        detail = f"{getattr(err, 'full_key', None) or 'config'}: {str(err).splitlines()[0]}"
    except ValueError as err:  # ConfigError included; a bug elsewhere is not damage
        detail = str(err)
    raise damaged_export(where, "metadata 'config'", detail)


def _blocks(tensors: dict[str, torch.Tensor], blocks: int,
            where: str) -> list[dict[str, torch.Tensor]]:
    """Each block's state dict from the tensors ``block_<b>/<name>``."""
    weights: list[dict[str, torch.Tensor]] = [{} for _ in range(blocks)]
    for key, tensor in tensors.items():
        block, _, name = key.partition("/")
        b = block.removeprefix("block_")
        if not (block.startswith("block_") and b.isdigit() and int(b) < blocks and name):
            raise damaged_export(where, "tensor names", f"{key!r} is not block_<b>/<name> with b "
                          f"below {blocks}, the config's model.blocks")
        weights[int(b)][name] = tensor
    empty = [b for b, state in enumerate(weights) if not state]
    if empty:
        raise damaged_export(where, "tensor names", f"none for block(s) {empty}")
    return weights
