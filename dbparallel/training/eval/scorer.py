"""The end-to-end character LM that scores generated text (gen_ppl), trained once and cached.

It is this project's own standard causal transformer (``ARBlock`` without a noisy stream),
trained with next-token cross-entropy on the train split. Every run on the same data and
vocabulary (DiffusionBlocks and its baselines alike) is scored by the same cached model. It
reads only the rows it trains on (``scorer_steps`` batches of ``BATCH`` rows drawn from
(seed, "scorer")), ``READ_STEPS`` steps' rows at a time, whatever the size of the split.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dbparallel.data.cache import cache_dir
from dbparallel.models.lm import ARBlock
from dbparallel.models.presets import ModelDims
from dbparallel.training.progress import Progress
from dbparallel.training.seeding import generator

VERSION = 2  # bump when the architecture or training recipe changes (invalidates caches)
DIMS = ModelDims(hidden=128, heads=4, mlp_ratio=4.0, layers=4)
BATCH, LR, WARMUP_STEPS = 32, 1e-3, 100
READ_STEPS = 256  # steps whose rows are read together

ReadRows = Callable[[np.ndarray], torch.Tensor]  # train-row positions -> (n, T) int64 ids


def scorer_draws(num_rows: int, steps: int, seed: int = 0) -> torch.Tensor:
    """(steps, BATCH) train-row positions of the scorer's steps, one draw per step."""
    g = generator(seed, "scorer")
    return torch.stack([torch.randint(num_rows, (BATCH,), generator=g) for _ in range(steps)])


def scorer_batches(read: ReadRows, num_rows: int, steps: int,
                   seed: int = 0) -> Iterator[torch.Tensor]:
    """The (BATCH, T) token rows of every scorer step, read ``READ_STEPS`` steps at a time."""
    for group in scorer_draws(num_rows, steps, seed).split(READ_STEPS):
        rows = read(group.reshape(-1).numpy())  # (len(group) * BATCH, T)
        yield from rows.view(len(group), BATCH, rows.shape[1]).unbind(0)


def train_scorer(batches: Iterator[torch.Tensor], vocab_size: int, steps: int, seed: int = 0,
                 device: str | torch.device = "cpu") -> ARBlock:
    """Fit the scoring LM to ``steps`` batches of token rows (BATCH, T); reruns on the CPU are
    bit-identical."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ARBlock(DIMS, vocab_size).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    # once per data set, then cached: minutes on a CPU, said where no bar is drawn
    bar = Progress(steps, "gen_ppl scorer (once per data set)", "step")
    if not bar.tty:
        print(f"evaluation: training the gen_ppl scorer for this data once ({steps} steps; "
              f"cached in {cache_dir()})", file=sys.stderr, flush=True)  # stdout: results
    with bar:
        for step, batch in zip(range(steps), batches, strict=True):
            for group in opt.param_groups:
                # linear warm-up, then cosine decay to 10%
                warm = min(1.0, (step + 1) / WARMUP_STEPS)
                group["lr"] = LR * warm * (0.55 + 0.45 * math.cos(math.pi * step / steps))
            ids = batch.to(device)
            logits = model.causal_logits(ids)  # (N, T, V)
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, vocab_size),
                                   ids[:, 1:].reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            bar.update()
    return model.cpu().eval()


def scorer_path(key: dict, num_rows: int, seq_len: int, vocab_size: int,
                steps: int) -> Path:
    """Where the scorer of ``steps`` steps for the data described by ``key`` is cached."""
    blob = json.dumps({**key, "version": VERSION, "steps": steps, "n": num_rows,
                       "seq_len": seq_len, "vocab_size": vocab_size}, sort_keys=True)
    return cache_dir() / f"text_scorer_{hashlib.sha256(blob.encode()).hexdigest()[:16]}.pt"


def cached_scorer(key: dict, num_rows: int, seq_len: int, read: ReadRows, vocab_size: int,
                  steps: int, device: str | torch.device = "cpu") -> ARBlock:
    """The scorer for the data described by ``key`` (a train split of ``num_rows`` rows of
    ``seq_len`` ids, read by ``read``), trained on first use."""
    path = scorer_path(key, num_rows, seq_len, vocab_size, steps)
    model = ARBlock(DIMS, vocab_size)
    if path.is_file():
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return model.eval()
        except (RuntimeError, OSError, EOFError):
            pass  # unreadable cache: retrain and overwrite below
    model = train_scorer(scorer_batches(read, num_rows, steps), vocab_size, steps,
                         device=device)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)
    return model


@torch.no_grad()
def continuation_nll(model: ARBlock, prompt: torch.Tensor,
                     continuation: torch.Tensor) -> torch.Tensor:
    """Nats per token (N,) of ``continuation`` (N, G) after ``prompt`` (N, P)."""
    ids = torch.cat([prompt, continuation], dim=1)  # (N, P + G)
    logits = model.causal_logits(ids)[:, prompt.shape[1] - 1:-1]  # (N, G, V)
    ce = F.cross_entropy(logits.transpose(1, 2).float(), continuation, reduction="none")
    return ce.mean(dim=1)
