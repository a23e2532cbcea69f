"""One file for a trained network: every block's EMA weights, the config and the partition.

The file is safetensors: tensors ``block_<b>/<name>`` (no pickled code, readable without this
project), and string metadata:

- ``format``: ``dbparallel-export/1``; ``task``; ``config``: the resolved config (YAML);
- ``partition``: the noise partition (JSON); ``steps``: each block's training step (JSON);
- ``tokenizer``: the text tasks' tokenizer (JSON, as vocab.json);
- ``sha256``: a checksum of every tensor's name, dtype, shape and bytes, in name order, that
  ``read_export`` verifies.

Reading one needs neither Ray nor the run directory nor the data.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass
from typing import Any

import torch

from dbparallel.config import Config, dump_yaml, from_dict
from dbparallel.errors import RunDirError

FORMAT = "dbparallel-export/1"


@dataclass
class Exported:
    """What an export holds."""

    cfg: Config
    weights: list[dict[str, torch.Tensor]]  # block 0 first
    steps: list[int]
    tokenizer: dict[str, Any] | None


def checksum(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 of every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def export_bytes(cfg: Config, weights: list[dict[str, torch.Tensor]], steps: list[int],
                 partition: dict, tokenizer: dict[str, Any] | None) -> bytes:
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
    return save(tensors, metadata=meta)


def read_export(data: bytes, where: str) -> Exported:
    """The contents of an export file; RunDirError naming ``where`` if it is not one, or its
    checksum disagrees."""
    from omegaconf import OmegaConf
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        tensors = load(data)
        meta = _metadata(data)
    except (SafetensorError, ValueError, json.JSONDecodeError) as err:
        raise RunDirError(f"{where}: not a dbparallel export ({err})") from None
    if meta.get("format") != FORMAT:
        raise RunDirError(f"{where}: not a dbparallel export (format "
                          f"{meta.get('format')!r}, expected {FORMAT!r})")
    if checksum(tensors) != meta["sha256"]:
        raise RunDirError(f"{where}: the weights do not match the file's checksum "
                          "(damaged in transit?); export the run again")
    raw = OmegaConf.to_container(OmegaConf.create(meta["config"]))
    assert isinstance(raw, dict)
    cfg = from_dict(raw)
    steps = json.loads(meta["steps"])
    weights: list[dict[str, torch.Tensor]] = [{} for _ in steps]
    for key, tensor in tensors.items():
        block, name = key.split("/", 1)
        weights[int(block.removeprefix("block_"))][name] = tensor
    tokenizer = json.loads(meta["tokenizer"]) if "tokenizer" in meta else None
    return Exported(cfg, weights, steps, tokenizer)


def _metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file (its header: 8-byte length, then JSON)."""
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + size]).get("__metadata__") or {}


def split_uri(path: str) -> tuple[str, str]:
    """(directory, file name) of a local path or URI; a URI's query (``?endpoint_override=``)
    stays with the directory, where the filesystem is made."""
    path, query = path.split("?", 1) if "://" in path and "?" in path else (path, "")
    head, name = posixpath.split(path.rstrip("/"))
    return (head or ".") + (f"?{query}" if query else ""), name
