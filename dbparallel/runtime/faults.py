"""Fault injection for testing what survives what: a seeded schedule of hard kills.

``debug.kill_block``/``kill_at_step``/``kill_times`` kill one block at one step;
``debug.chaos_seed`` with ``debug.chaos_kills`` draws a schedule of kills over every block (and
the assembly actor, when assemblies run during training) from the seed, so a chaos run is
repeatable. Each incarnation of an actor dies at most once: incarnation i of block b (after i
restarts) dies at the i-th step the schedule gives b.
"""

from __future__ import annotations

import os
import random

from dbparallel.config import Config

ASSEMBLER = -1  # the schedule's name for the assembly actor


def kill_steps(cfg: Config) -> dict[int, list[int]]:
    """Target (block, or ASSEMBLER) -> the ascending steps at which its incarnations die."""
    d, t = cfg.debug, cfg.train
    out: dict[int, list[int]] = {}
    if d.kill_block >= 0:
        out[d.kill_block] = [d.kill_at_step] * d.kill_times
    if d.chaos_seed >= 0 and d.chaos_kills:
        rng = random.Random(d.chaos_seed)
        targets = list(range(cfg.model.blocks))
        if t.assemble_every:
            targets.append(ASSEMBLER)
        for _ in range(d.chaos_kills):
            target = rng.choice(targets)
            # within the target's own training (train.block_steps gives blocks their own)
            last = t.max_steps if target == ASSEMBLER else t.steps_of(target)
            out.setdefault(target, []).append(rng.randrange(1, last))
    return {k: sorted(v) for k, v in out.items()}


def due(cfg: Config, target: int, incarnation: int) -> int | None:
    """The step at which this incarnation of ``target`` dies, if it does."""
    steps = kill_steps(cfg).get(target, [])
    return steps[incarnation] if incarnation < len(steps) else None


def die() -> None:
    """Exit hard: no cleanup, no checkpoint, like a lost process."""
    os._exit(1)
