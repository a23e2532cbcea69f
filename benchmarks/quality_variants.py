"""Named variants of the DiffusionBlocks runs of quality_images.py, each at equal compute.

A variant is a name, or several joined by ``+`` (``learned+log_uniform``), each adding config
overrides to a DiffusionBlocks run:

    default         the recipe as it is
    frozen          model.label_embedding=frozen (the frozen seed-derived label table)
    learned         model.label_embedding=learned (each block trains its own label table)
    equiprobable    noise.partition=equiprobable (equal mass of the training density)
    log_uniform     noise.partition=log_uniform (equal widths in ln sigma)
    noise_start     sample.label_start=noise (the ViT chain starts at sigma_max * eps)
    zero_start      sample.label_start=zero (the ViT chain starts at 0)
    steps=w0:w1:..  train.block_steps in the proportions w0, w1, ... (block 0 first), summing
                    to B * train.steps: the same layer-steps as B blocks of train.steps each

The end-to-end baseline takes no variant.
"""

from __future__ import annotations

import re

FIXED = {
    "default": [],
    "frozen": ["model.label_embedding=frozen"],
    "learned": ["model.label_embedding=learned"],
    "equiprobable": ["noise.partition=equiprobable"],
    "log_uniform": ["noise.partition=log_uniform"],
    "noise_start": ["sample.label_start=noise"],
    "zero_start": ["sample.label_start=zero"],
}


def split_steps(weights: list[float], total: int) -> list[int]:
    """``total`` steps split in proportion to ``weights`` (largest remainders round up), each
    block at least one step."""
    if not weights or any(w <= 0 for w in weights):
        raise ValueError(f"steps weights must be > 0, got {weights}")
    exact = [total * w / sum(weights) for w in weights]
    counts = [int(x) for x in exact]
    order = sorted(range(len(exact)), key=lambda i: counts[i] - exact[i])
    for i in order[:total - sum(counts)]:
        counts[i] += 1
    if min(counts) < 1:
        raise ValueError(f"{total} steps leave a block with none at weights {weights}")
    return counts


def overrides(variant: str, blocks: int, steps: int) -> list[str]:
    """The config overrides of ``variant`` for B = ``blocks`` blocks of ``steps`` steps."""
    out: list[str] = []
    for part in variant.split("+"):
        if part in FIXED:
            out += FIXED[part]
            continue
        match = re.fullmatch(r"steps=([0-9.:]+)", part)
        if not match:
            raise ValueError(f"unknown variant {part!r}: one of {', '.join(FIXED)} or "
                             f"steps=w0:w1:...")
        weights = [float(w) for w in match.group(1).split(":")]
        if len(weights) != blocks:
            raise ValueError(f"variant {part!r} has {len(weights)} weights for B={blocks}")
        counts = split_steps(weights, blocks * steps)
        out.append(f"train.block_steps=[{','.join(str(c) for c in counts)}]")
    return out


def slug(variant: str) -> str:
    """``variant`` as a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", variant)
