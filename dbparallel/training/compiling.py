"""train.compile: a block's step loss compiled by ``torch.compile``, and what a compiled step
that replays CUDA graphs asks of the gradients (training/block_trainer.py)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from dbparallel.config import Config

# train.compile_mode values whose compiled step replays CUDA graphs
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def compiled(loss: Callable[..., torch.Tensor], cfg: Config) -> Callable[..., torch.Tensor]:
    """``loss`` compiled in train.compile_mode, with torch's recompile limit raised to hold
    every block's graph and piece size.

    Compiled once per trainer: a restarted actor compiles again. Each block is its own graph
    (its noise range is a constant of it): local mode compiles B of them."""
    from torch._dynamo import config as dynamo

    t = cfg.train
    # (named cache_size_limit before torch 2.7)
    key = "recompile_limit" if hasattr(dynamo, "recompile_limit") else "cache_size_limit"
    setattr(dynamo, key, max(getattr(dynamo, key), cfg.model.blocks + t.micro_batches + 4))
    mode = None if t.compile_mode == "default" else t.compile_mode
    return torch.compile(loss, mode=mode)


def keeps_grads(cfg: Config) -> bool:
    """Whether a step's gradients are zeroed between steps, never freed: CUDA graphs hand an
    unset .grad their pool's memory, which the step's next piece overwrites, so with several
    pieces (train.micro_batches > 1) a compiled step that replays them keeps its gradients."""
    t = cfg.train
    return t.compile and t.compile_mode in CUDA_GRAPH_MODES and t.micro_batches > 1
