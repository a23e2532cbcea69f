"""Compose the blocks of a run from their snapshots and evaluate the composed network."""

from __future__ import annotations

from dbparallel.config import Config
from dbparallel.data.shards import DataIndex
from dbparallel.training.eval.diagnostics import FILE as DIAGNOSTICS_FILE
from dbparallel.training.loading import load_run
from dbparallel.training.storage import Storage


def assemble(cfg: Config, storage: Storage, index: DataIndex, device: str = "cpu",
             write_samples: bool = True, step: int | None = None) -> dict[str, float]:
    """Load, compose and evaluate every block (at ``step``, else the latest snapshots);
    optionally write the samples (samples.png) and where quality is lost (diagnostics.json)."""
    network = load_run(storage.root, step, device, cfg)
    metrics = network.evaluate(index)
    if write_samples:
        name, data = network.artifact(index)
        storage.write_bytes(name, data)
        if cfg.data.latents:  # sample.decoder set or dropped on a resume: one of the two
            other = "samples.png" if name == "samples.safetensors" else "samples.safetensors"
            if storage.exists(other):
                storage.delete(other)
        storage.write_json(DIAGNOSTICS_FILE, network.diagnose(index))
    return metrics
