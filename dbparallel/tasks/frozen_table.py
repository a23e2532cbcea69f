"""The frozen unit-norm table a task denoises towards: the label embedding of ``vit``, the
token embedding of ``ar`` and ``looped`` (docs/method.md, Losses). Every process that builds
the task (the driver, each block's, ``plan``) draws it in its host's memory, whatever the
device: one that cannot hold it is refused before it is drawn, naming the keys that size it,
not left to fail in torch's allocator (or be killed by the system) part-way."""

from __future__ import annotations

import torch

from dbparallel.config import bytes_text
from dbparallel.errors import ConfigError
from dbparallel.host import machine_memory
from dbparallel.models.layers import frozen_unit_embedding

FLOAT32_BYTES = 4


def frozen_table(seed: int, rows: int, hidden: int, rows_key: str) -> torch.Tensor:
    """``frozen_unit_embedding`` of ``rows`` x ``hidden``; ConfigError naming ``rows_key``
    (data.num_classes, data.vocab_size) and model.hidden where its float32 numbers exceed
    this machine's memory."""
    need, have = rows * hidden * FLOAT32_BYTES, machine_memory()
    if need > have:
        raise ConfigError(
            f"{rows_key}={rows:,} x model.hidden={hidden:,}: the frozen table of one unit-norm "
            f"row per {'class' if rows_key == 'data.num_classes' else 'token'} is "
            f"{bytes_text(need)} of float32, which every process of the run holds in its "
            f"host's memory, and this machine has {bytes_text(have)}; fewer rows or a "
            f"narrower model.hidden")
    return frozen_unit_embedding(seed, rows, hidden)
