"""What the text tasks share: batches of token rows and placeholder batches.

A text data set is a token index (data/corpus.py): each row is ``data.seq_len`` token ids in a
``tokens`` column (a fixed-size list of uint8 or uint16); ``unpack`` checks rows and holds their
ids compactly on the CPU, ``to_device`` turns a batch of them into an (N, seq_len) int64 tensor
on the block's device.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from dbparallel.config import Config
from dbparallel.data.shard_reader import TOKENS_COLUMN
from dbparallel.data.tokenizer import Usable
from dbparallel.errors import DataError, RowError
from dbparallel.tasks.base import Batch, Decoding, Drawing, Rows


def gumbel_sample(logits: torch.Tensor, generator: torch.Generator,
                  temperature: float = 1.0, usable: Usable | None = None) -> torch.Tensor:
    """Token ids (...) drawn from softmax(logits (..., V) / temperature) by the Gumbel-max
    trick; temperature 0 takes the most likely token. ``usable`` (the tokenizer's): only ids
    below it are drawn, or only the ids of a tensor (a BPE's ids of the training split);
    data.vocab_size may hold more ids than the tokenizer has, and an id it lacks, or a byte
    the corpus never holds, decodes to nothing readable."""
    if isinstance(usable, torch.Tensor):
        drawn = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
        drawn[usable.to(logits.device)] = True
        logits = logits.float().masked_fill(~drawn, float("-inf"))
    elif usable is not None and usable < logits.shape[-1]:
        logits = logits.float().clone()
        logits[..., usable:] = float("-inf")
    if temperature == 0:
        return logits.argmax(dim=-1)
    if temperature != 1.0:
        logits = logits.float() / temperature
    u = torch.rand(logits.shape, generator=generator, dtype=torch.float64).to(logits.device)
    exponential = (-torch.log(u.clamp_min(1e-300))).clamp_min(1e-300)  # -log u ~ Exp(1)
    gumbel = -torch.log(exponential).float()  # -log(-log u) ~ Gumbel(0, 1)
    return (logits.float() + gumbel).argmax(dim=-1)


def token_rows(rows: pa.Table, seq_len: int, vocab_size: int,
               device: str | torch.device = "cpu") -> torch.Tensor:
    """(N, seq_len) int64 token ids of the ``tokens`` column on ``device``; RowError names the
    first row that is null, of another length or holds an id >= ``vocab_size``."""
    return token_ids(rows, seq_len, vocab_size).to(device, non_blocking=True).long()


def token_ids(rows: pa.Table, seq_len: int, vocab_size: int) -> torch.Tensor:
    """``token_rows`` held compactly on the CPU: uint8 ids stay uint8, wider ids are int32."""
    if TOKENS_COLUMN not in rows.column_names:
        raise DataError(f"column {TOKENS_COLUMN!r} is missing; the rows have "
                        f"{rows.column_names}")
    column = rows.column(TOKENS_COLUMN).combine_chunks()
    kind = column.type
    if not (pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind)
            or pa.types.is_large_list(kind)) or not pa.types.is_integer(kind.value_type):
        raise DataError(f"column {TOKENS_COLUMN!r}: expected a list of integer ids per row, "
                        f"got {kind}")
    if column.null_count:
        raise RowError(_first(column.is_null().to_numpy(zero_copy_only=False)), TOKENS_COLUMN,
                       "is null")
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    if (lengths != seq_len).any():
        row = _first(lengths != seq_len)
        raise RowError(row, TOKENS_COLUMN, f"has {lengths[row]} ids, expected "
                       f"data.seq_len={seq_len}")
    ids = pc.list_flatten(column).to_numpy(zero_copy_only=False).reshape(len(column), seq_len)
    bad = (ids >= vocab_size) | (ids < 0)
    if bad.any():
        row = _first(bad.any(axis=1))
        raise RowError(row, TOKENS_COLUMN, f"has token id {int(ids[row][bad[row]][0])}, "
                       f"outside [0, {vocab_size}) (data.vocab_size={vocab_size})")
    # a writable copy; uint8 stays, wider ids become int32 (torch has few uint16 kernels)
    return torch.from_numpy(ids.astype(np.uint8 if ids.dtype == np.uint8 else np.int32))


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


class TextData(Decoding, Drawing):
    """Rows are ``data.seq_len`` token ids (characters or BPE tokens)."""

    columns: list[str] | None = None  # a token shard has one column

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.vocab_size, self.seq_len = cfg.data.vocab_size, cfg.data.seq_len

    def unpack(self, rows: pa.Table) -> Rows:
        return {"tokens": token_ids(rows, self.seq_len, self.vocab_size)}

    def to_device(self, rows: Rows, device: str | torch.device) -> Batch:
        # ids travel in their compact dtype and are widened on the device
        return {"tokens": rows["tokens"].to(device, non_blocking=True).long()}

    def example_batch(self, n: int, device: str | torch.device) -> Batch:
        return {"tokens": torch.zeros(n, self.seq_len, dtype=torch.long, device=device)}
