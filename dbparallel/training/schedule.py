"""The learning rate of a block's steps (train.warmup_steps, train.lr_schedule)."""

from __future__ import annotations

import math

from dbparallel.config import TrainConfig


def learning_rate(t: TrainConfig, steps: int, step: int) -> float:
    """The rate of ``step`` (from 0) of a block that takes ``steps`` steps: linear warm-up to
    train.lr, then train.lr (constant) or half a cosine down towards train.min_lr (cosine).
    The n steps after warm-up run at the points 1/(n+1) .. n/(n+1) of the cosine: every step
    trains (none runs at min_lr exactly), and the warm-up's last step is the only one at the
    peak (without warm-up none is: a single step runs at the middle of the two rates)."""
    if t.warmup_steps and step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    if t.lr_schedule == "constant":
        return t.lr
    n = steps - t.warmup_steps
    done = min(1.0, (step - t.warmup_steps + 1) / (n + 1))
    return t.min_lr + (t.lr - t.min_lr) * 0.5 * (1 + math.cos(math.pi * done))


def warmup_warning(t: TrainConfig, blocks: int) -> str | None:
    """What a run says before it starts where a block's steps (train.steps, or its
    train.block_steps count) end before train.warmup_steps: its learning rate never reaches
    train.lr. None where every block's does."""
    short = [b for b in range(blocks) if t.steps_of(b) < t.warmup_steps]
    if not short:
        return None
    w = t.warmup_steps
    if t.block_steps:
        which = (f"train.block_steps={list(t.block_steps)}: block"
                 + (f"s {', '.join(map(str, short))} take" if len(short) > 1
                    else f" {short[0]} takes")
                 + f" {', '.join(str(t.steps_of(b)) for b in short)} steps, below")
        their = ("they end at " if len(short) > 1 else "it ends at ") + ", ".join(
            f"{t.steps_of(b)}/{w}" for b in short)
    else:
        which, their = f"train.steps={t.steps} is below", f"it ends at {t.steps}/{w}"
    return (f"{which} train.warmup_steps={w}: the learning rate warms up linearly over {w} "
            f"steps and never reaches train.lr={t.lr:g} ({their} of it); lower "
            f"train.warmup_steps or raise the steps")
