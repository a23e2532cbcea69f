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
