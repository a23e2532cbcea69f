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


def generator(seed: int, purpose: str, *indices: int,
              device: str | torch.device = "cpu") -> torch.Generator:
    """A generator on ``device`` seeded by ``derive_seed``. The same seed gives the same
    numbers on every CPU, and on every GPU of one model (CUDA sizes its random kernels by the
    GPU's processor count), not across them."""
    return torch.Generator(device=device).manual_seed(derive_seed(seed, purpose, *indices))
