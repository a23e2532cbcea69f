"""Every random stream of a run derives from (run.seed, purpose, block, index).

Nothing depends on process, placement or history, so a block resumed at step S draws exactly
what an uninterrupted block draws at step S, in local mode and on any Ray node alike.
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, purpose: str, *indices: int) -> int:
    """A 63-bit seed from the run seed, a purpose name and indices (block, step, ...)."""
    text = ":".join(["dbparallel", str(seed), purpose, *map(str, indices)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def generator(seed: int, purpose: str, *indices: int) -> torch.Generator:
    """A CPU generator seeded by ``derive_seed``."""
    return torch.Generator().manual_seed(derive_seed(seed, purpose, *indices))
