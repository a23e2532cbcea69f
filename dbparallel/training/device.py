"""Where a block, the assembly and a loaded network run: one policy for all three.

A GPU is used exactly where one is asked for, and asking for one that is not here is an error
naming what asked:

- a block trainer: ``runtime.gpus_per_block > 0`` (local mode and the Ray block actor);
- the assembly (evaluation and samples, during and after training):
  ``runtime.assembly_gpus > 0`` (local mode and the Ray assembly actor);
- ``dbparallel.load`` and the CLI's ``--device``: ``device="cuda"`` or ``"cuda:N"``.

Nothing asked is the CPU. There is no fallback either way: a run that asked for a GPU and
trained on the CPU would be hours slower without saying so.
"""

from __future__ import annotations

import torch

from dbparallel.config import Config
from dbparallel.errors import UserError


def _gpu_if_asked(asked: bool, what: str, fix: str) -> str:
    """The CUDA device if ``asked`` and one is here, the CPU if not asked, else a UserError."""
    if not asked:
        return "cpu"
    if not torch.cuda.is_available():
        raise UserError(f"{what} asks for a GPU, but torch finds no CUDA device here "
                        f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); {fix}")
    return "cuda"


def block_device(cfg: Config, gpu: str = "cuda") -> str:
    """The device of every block trainer of ``cfg``: ``gpu`` where it asks for one (a Ray
    Train worker's own, ``cuda:N``), else the CPU."""
    n = cfg.runtime.gpus_per_block
    asked = _gpu_if_asked(n > 0, f"runtime.gpus_per_block={n:g}",
                          "set runtime.gpus_per_block=0 to train on the CPU")
    return gpu if asked == "cuda" else "cpu"


def assembly_device(cfg: Config) -> str:
    """The device of the assembly of ``cfg``: composing, evaluating and sampling."""
    n = cfg.runtime.assembly_gpus
    return _gpu_if_asked(n > 0, f"runtime.assembly_gpus={n:g}",
                         "set runtime.assembly_gpus=0 to assemble on the CPU")


def device_name(requested: str | torch.device | None, key: str = "device") -> str | None:
    """``requested`` as a string (a ``torch.device`` too), or None; UserError naming ``key``
    for anything else: torch reads an integer as a CUDA index, so 0 must not pass as
    "nothing asked"."""
    if isinstance(requested, torch.device):
        return str(requested)
    if requested is not None and not isinstance(requested, str):
        raise UserError(f"{key}: expected cpu, cuda or cuda:N (a string), got "
                        f"{type(requested).__name__} {requested!r:.40}")
    return requested


def requested_device(requested: str | torch.device | None, key: str = "device") -> str:
    """``requested`` ("cpu", "cuda", "cuda:N"; None = "cpu"), checked against this machine;
    its errors name it as ``key`` does: a program's ``device='cuda'``, a command's
    ``--device cuda``."""
    def named(value: str) -> str:
        return f"{key} {value}" if key.startswith("--") else f"{key}={value!r}"

    name = device_name(requested, key) or "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise UserError(f"{named(name)}: expected cpu, cuda or cuda:N")
    if device.type == "cpu":
        return name
    _gpu_if_asked(True, named(name), f"use {named('cpu')}")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise UserError(f"{named(name)}: this machine has {count} CUDA device(s), "
                        f"cuda:0..cuda:{count - 1}")
    return name
