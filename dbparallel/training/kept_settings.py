"""What config.yaml records of the settings a rerun changed: it says how the weights were
trained, so a rerun in which no block of the run trains a further step keeps the stored values
of its changed train.* settings (other settings, e.g. sample.*, apply to its assembly, and are
recorded); a rerun whose blocks train on records them all."""

from __future__ import annotations

import copy
from typing import Any

from dbparallel.config import Config
from dbparallel.errors import RunDirError
from dbparallel.training.storage import Storage

TRAINING_SECTIONS = ("train",)  # the settings of how a block's steps train


def kept_settings(storage: Storage, cfg: Config,
                  changed: list[tuple[str, Any, Any]]) -> list[tuple[str, Any, Any]]:
    """The ``changed`` (key, stored value, value now) settings config.yaml keeps at their
    stored values: those of TRAINING_SECTIONS, where no block of the run (whatever --block
    says) trains a further step with ``cfg``."""
    kept = [c for c in changed if c[0].split(".")[0] in TRAINING_SECTIONS]
    return [] if kept and _trains_on(storage, cfg) else kept


def listed(changed: list[tuple[str, Any, Any]], most: int) -> str:
    """``key old -> new`` of the first ``most`` settings, and how many more."""
    more = f" and {len(changed) - most} more" if len(changed) > most else ""
    return ", ".join(f"{k} {a!r} -> {b!r}" for k, a, b in changed[:most]) + more


def what_records(changed: list[tuple[str, Any, Any]], kept: list[tuple[str, Any, Any]]) -> str:
    """What config.yaml records of the ``changed`` settings, those ``kept`` at their stored
    values."""
    if not kept:
        return "config.yaml now records them"
    others = [c[0] for c in changed if c not in kept]
    return (f"nothing left to train: the run keeps its recorded settings "
            f"({', '.join(c[0] for c in kept)}), with which its weights were trained, as no "
            f"block trains a further step (each is done at its train.steps, "
            f"train.block_steps: raise those to train on with the new values)"
            + (f"; config.yaml now records {', '.join(others)}" if others else ""))


def with_stored(cfg: Config, kept: list[tuple[str, Any, Any]]) -> Config:
    """A copy of ``cfg`` with the ``kept`` (key, stored value, value now) at their stored
    values (``cfg`` itself where none is)."""
    if not kept:
        return cfg
    written = copy.deepcopy(cfg)
    for key, then, _ in kept:
        section, name = key.split(".", 1)
        setattr(getattr(written, section), name, then)
    return written


def _trains_on(storage: Storage, cfg: Config) -> bool:
    """Whether a block of the run would train a further step with ``cfg``: its newest
    training state is below its train.steps (train.block_steps) count, or cannot be read
    (its start then goes on from an older one, or from step 0)."""
    from dbparallel.training.checkpoint import BlockCheckpoints

    for b in range(cfg.model.blocks):
        checkpoints = BlockCheckpoints(storage, b)
        try:
            steps = checkpoints.steps("state")
        except RunDirError:  # a damaged manifest: the block's own start says what it does
            return True
        if not steps or steps[-1] < cfg.train.steps_of(b) \
                or not checkpoints.readable("state", steps[-1]):
            return True
    return False
