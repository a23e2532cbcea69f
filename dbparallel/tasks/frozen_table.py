"""The frozen unit-norm table a task denoises towards: the label embedding of ``vit``, the
token embedding of ``ar`` and ``looped`` (docs/method.md, Losses). Every process that trains or
uses the network draws it in its host's memory, whatever the device: one that cannot hold it
is refused when the task is built, naming the keys that size it, not left to fail in torch's
allocator (or be killed by the system) part-way. It is drawn at its first use, so a process
that builds the task for its partition or its config's checks (the driver, ``report``,
``export``) never draws it, and one that only counts a step's shapes (``plan``,
``model.blocks=auto``) gets it on the meta device."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from dbparallel.config import bytes_text
from dbparallel.errors import ConfigError
from dbparallel.host import machine_memory
from dbparallel.models.layers import frozen_unit_embedding

FLOAT32_BYTES = 4


@dataclass
class FrozenTable:
    """``frozen_unit_embedding`` of ``rows`` x ``hidden``, drawn by ``tensor()`` once (on the
    meta device where ``shapes_only``). ConfigError naming ``rows_key`` (data.num_classes,
    data.vocab_size) and model.hidden where its float32 numbers exceed this machine's memory,
    when it is made."""

    seed: int
    rows: int
    hidden: int
    rows_key: str
    shapes_only: bool = False
    _drawn: torch.Tensor | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        need, have = self.rows * self.hidden * FLOAT32_BYTES, machine_memory()
        if need > have:
            kind = "class" if self.rows_key == "data.num_classes" else "token"
            raise ConfigError(
                f"{self.rows_key}={self.rows:,} x model.hidden={self.hidden:,}: the frozen "
                f"table of one unit-norm row per {kind} is {bytes_text(need)} of float32, "
                f"which every process of the run holds in its host's memory, and this "
                f"machine has {bytes_text(have)}; fewer rows or a narrower model.hidden")

    def tensor(self) -> torch.Tensor:
        if self._drawn is None:
            self._drawn = torch.empty(self.rows, self.hidden, device="meta") \
                if self.shapes_only else frozen_unit_embedding(self.seed, self.rows, self.hidden)
        return self._drawn
