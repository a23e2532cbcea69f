"""The noise levels a block's steps drew, as its metrics lines report them (``noise_min``,
``noise_median``, ``noise_max``): sigma, or for MDM the masking time t.

Every task's loss draws them first from the step's generator (``generator(seed, "step",
block, step)``, block_trainer.py), so drawing again from a fresh one gives the same values,
after a resume too: the trainer keeps none of them.
"""

from __future__ import annotations

import torch

from dbparallel.config import Config
from dbparallel.tasks import Task
from dbparallel.training.seeding import generator


@torch.no_grad()
def noise_stats(cfg: Config, task: Task, block: int, steps: range,
                device: torch.device | str = "cpu") -> dict[str, float] | None:
    """min, median and max of the noise levels block ``block`` drew at ``steps`` on
    ``device`` (its trainer's: a CUDA block draws on the GPU). None when the loss draws none
    (an end-to-end classifier, causal LM or BPTT core)."""
    t = cfg.train
    if t.objective == "end_to_end" and cfg.task in ("vit", "ar", "looped"):
        return None
    lo, hi = task.partition.ranges[block]
    drawn = torch.cat([task.noise.sample(  # type: ignore[attr-defined]
        t.batch_size, lo, hi, generator(cfg.run.seed, "step", block, s, device=device))
        for s in steps])
    if not len(drawn):
        return None
    # one read from the device, not one per number
    low, median, high = torch.stack([drawn.min(), drawn.median(), drawn.max()]).tolist()
    return {"noise_min": low, "noise_median": median, "noise_max": high}
