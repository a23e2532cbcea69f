"""dbparallel: DiffusionBlocks training with one concurrent, independent actor per block.

``dbparallel.load(run_dir_or_file)`` returns a trained network with its task's verbs
(``sample``, ``predict``, ``generate``, ``bpc``, ``log_likelihood``); see docs/api.md.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dbparallel.training.network import Network

__version__ = "0.1.0"


def load(source: str | os.PathLike, step: int | None = None,
         device: str | None = None) -> Network:
    """The composed network of a run directory (path or URI; its latest snapshots, or those
    of ``step``) or of a file written by ``dbparallel export``, on ``device`` ("cpu", the
    default, "cuda" or "cuda:N"; a CUDA device that is not here is an error). Needs no Ray."""
    from dbparallel.training.loading import load as load_network

    return load_network(source, step, device)


def export(run_dir: str | os.PathLike, out: str | os.PathLike, step: int | None = None) -> Network:
    """Write every block's EMA weights of ``run_dir`` (the latest snapshots, or those of
    ``step``), its config and partition to the single safetensors file ``out`` (path or URI);
    returns the network written. Refuses a run with a block missing or trained with another
    config, naming it."""
    from dbparallel.training.loading import export_run

    return export_run(os.fspath(run_dir), os.fspath(out), step)
