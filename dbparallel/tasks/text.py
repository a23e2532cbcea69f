"""What the text tasks share: token tensors of the train split and placeholder batches."""

from __future__ import annotations

import pyarrow as pa
import torch

from dbparallel.config import Config
from dbparallel.data.text import text_tokens
from dbparallel.tasks.base import Batch


def gumbel_sample(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Token ids (...) drawn from softmax(logits (..., V)) by the Gumbel-max trick."""
    u = torch.rand(logits.shape, generator=generator, dtype=torch.float64).to(logits.device)
    exponential = (-torch.log(u.clamp_min(1e-300))).clamp_min(1e-300)  # -log u ~ Exp(1)
    gumbel = -torch.log(exponential).float()  # -log(-log u) ~ Gumbel(0, 1)
    return (logits.float() + gumbel).argmax(dim=-1)


class TextData:
    """Rows are ``data.seq_len`` characters of the train split, as token ids."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.vocab_size, self.seq_len = cfg.data.vocab_size, cfg.data.seq_len

    def prepare(self, table: pa.Table) -> Batch:
        tokens, _ = text_tokens(table, self.seq_len, self.vocab_size, "train")
        return {"tokens": tokens}

    def example_batch(self, n: int, device: str | torch.device) -> Batch:
        return {"tokens": torch.zeros(n, self.seq_len, dtype=torch.long, device=device)}
