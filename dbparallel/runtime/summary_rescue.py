"""A block lost after its last step, before it sent its summary (its row of report.json).

Its steps are all in its final checkpoint: one new process of the block (a BlockActor, also for
a block with replicas: reading a checkpoint takes no group) resumes from it, trains nothing and
sends the summary, with what the lost one measured. Only where that one fails too, or its
newest checkpoint is short of the block's steps, is the block lost (BlockLost).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import ray

from dbparallel.config import Config
from dbparallel.runtime.backend import BlockLost

log = logging.getLogger(__name__)
SUMMARY_TIMEOUT_S = 300.0  # for a block done training to send its summary


def summary_of(actor: Any) -> dict[str, Any]:
    """A block actor's summary: its process has trained the block's last step."""
    return ray.get(actor.summary.remote(), timeout=SUMMARY_TIMEOUT_S)


def rescue_summary(cfg: Config, block: int, lost: str,
                   start: Callable[[], Any]) -> dict[str, Any]:
    """Block ``block``'s summary from a new BlockActor that ``start`` starts (with
    max_restarts=0), which is killed once it answered; ``lost``: what happened to the
    block's processes, in words. BlockLost where the new actor sends no summary or one short
    of train.steps_of(block). The row keeps runtime.replicas_per_block as the replicas that
    trained the block, though one process read it."""
    log.warning("block %d: %s; a new process of the block reads its summary from its final "
                "checkpoint", block, lost)
    actor = start()
    try:
        summary = summary_of(actor)
    except ray.exceptions.RayError as err:
        raise BlockLost(f"{lost}, and a new process of it did not send it either: "
                        f"{first_line(root_cause(err))}") from err
    finally:
        ray.kill(actor, no_restart=True)
    steps = cfg.train.steps_of(block)
    if summary.get("steps", 0) < steps:  # its final checkpoint was not written
        raise BlockLost(f"{lost}, and its newest checkpoint is of step {summary.get('steps')} "
                        f"of {steps}")
    replicas = cfg.runtime.replicas_per_block
    if replicas > 1 and summary.get("replicas", 1) == 1:
        summary = {**summary, "replicas": replicas}
    return summary


def first_line(err: BaseException) -> str:
    """The first line of what ``err`` says, or its type's name where it says nothing."""
    said = str(err).strip()
    return said.splitlines()[0] if said else type(err).__name__


def root_cause(err: BaseException) -> BaseException:
    """The error a Ray task raised, where ``err`` is Ray's wrapper of it."""
    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, BaseException) else err
