"""Evaluation of the composed text models on the test split, and their text samples.

``bpc``: bits per character of held-out sequences (MDM: the ELBO; AR and looped: teacher
forced). AR and looped also continue held-out prompts: ``gen_ppl`` is the continuations'
per-token perplexity under the project's own end-to-end scoring LM (training/eval/scorer.py,
trained once and cached), ``sample_entropy`` the mean entropy in bits of each continuation's
token histogram; ``data_ppl`` and ``data_entropy`` are the same numbers for the true
continuations. The looped model reports the training memory of one step of both objectives
(DiffusionBlocks: one core pass; BPTT: K unrolled passes).

With ``data.tokenizer=bpe`` a token is a BPE token, so the tasks' losses are bits per token:
they are reported as ``bpt`` (``bpt_sigma_max``, ...), and ``bpc`` = bpt x tokens / characters
of the held-out rows (their decoded text), i.e. the same total bits over the characters they
hold (AR scores positions 1..T-1 of a row: the characters of those tokens);
``chars_per_token`` is reported with them. ``sample.prompt_len`` and
``sample.gen_len`` count tokens; ``gen_ppl`` and the entropies are per token. Only the rows
scored are read: ``sample.eval_samples`` test rows and the scorer's training batches
(data/split_reader.take_rows). A corpus with no test split is scored on its training rows
(``DataIndex.eval_split``), as image data is. Generation draws only the tokenizer's
``usable`` ids (for BPE, those of the training split).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys

import numpy as np
import torch

from dbparallel.config import Config
from dbparallel.data.shards import DataIndex
from dbparallel.data.split_reader import take_rows
from dbparallel.data.tokenizer import TRAIN_IDS_KEY, Tokenizer, Usable, load_tokenizer
from dbparallel.errors import RowError
from dbparallel.models.block import Block
from dbparallel.tasks import Task
from dbparallel.tasks.text import token_rows
from dbparallel.training.eval.scorer import cached_scorer, continuation_nll, scorer_path
from dbparallel.training.progress import Progress
from dbparallel.training.seeding import generator

CHUNK = 128  # sequences per evaluation forward pass
FAR_MORE = 10  # evaluation work (scorer steps, prompts) per training step worth a note on a CPU


def read_rows(cfg: Config, index: DataIndex, split: str, positions: np.ndarray) -> torch.Tensor:
    """(len(positions), seq_len) int64 token ids of rows ``positions`` of ``split``; a bad row
    is named by its file and row."""
    try:
        return token_rows(take_rows(index, split, positions), cfg.data.seq_len,
                          cfg.data.vocab_size)
    except RowError as err:
        shards = index.shards(split)
        starts = np.cumsum([0] + [s.rows for s in shards])
        at = int(positions[err.row])
        k = int(np.searchsorted(starts, at, side="right")) - 1
        raise err.at(f"{shards[k].uri} row {shards[k].first_row + at - starts[k]}") from None


BPC_NOTE = ("bpc: of the final logits, where each token's chain has already chosen a token (it "
            "measures the sampler); bpc_sigma_max, the first step's, is the likelihood "
            "comparable with an end-to-end model's bpc (docs/text.md)")


def _chain(cfg: Config, metrics: dict[str, float]) -> bool:
    """Whether ``metrics`` are an ar or looped chain's, with both bpc (a looped network
    trained end to end by BPTT reports both too; its bpc is the likelihood)."""
    return cfg.train.objective != "end_to_end" and {"bpc", "bpc_sigma_max"} <= set(metrics)


def bpc_note(cfg: Config, metrics: dict[str, float]) -> str | None:
    """The line that says which of an ar or looped chain's two bpc is a likelihood, for
    metrics that have both; None for others."""
    return BPC_NOTE if _chain(cfg, metrics) else None


def likelihood_bpc(cfg: Config, scores: dict[str, float]) -> float:
    """Of a task's bpc scores, the one that is the network's likelihood: a chain's first
    step's (bpc_sigma_max), else (end to end, MDM's ELBO) its bpc."""
    return scores["bpc_sigma_max"] if _chain(cfg, scores) else scores["bpc"]


def held_out(cfg: Config, index: DataIndex, count: int) -> torch.Tensor:
    """``count`` sequences (N, seq_len) spread evenly over the test split (the training
    rows when there is none: ``DataIndex.eval_split``)."""
    split = index.eval_split
    n = index.num_rows(split)
    rows = torch.linspace(0, n - 1, min(count, n)).round().long()
    return read_rows(cfg, index, split, rows.numpy())


def _chunks(x: torch.Tensor) -> list[torch.Tensor]:
    return list(x.split(CHUNK))


def scored_tokens(cfg: Config, ids: torch.Tensor) -> torch.Tensor:
    """The tokens (..., T') of rows ``ids`` (..., T) that a task's bpc scores: MDM all of
    them, AR and looped each one given the tokens before it, so positions 1..T-1."""
    return ids if cfg.task == "mdm" else ids[..., 1:]


def bits_per_character(cfg: Config, task: Task, nets: list[Block], held: torch.Tensor,
                       device: str, tokenizer: Tokenizer) -> dict[str, float]:
    """The task's BPC metrics averaged over ``held`` in chunks; for BPE tokens the task's
    per-token numbers as ``bpt*`` and their per-character equivalents as ``bpc*``."""
    sums: dict[str, float] = {}
    for i, chunk in enumerate(_chunks(held)):
        g = generator(cfg.run.seed, "eval-bpc", i)
        for k, v in task.bpc(nets, chunk.to(device), g).items():
            sums[k] = sums.get(k, 0.0) + v * len(chunk)
    means = {k: v / len(held) for k, v in sums.items()}
    if tokenizer.name == "char":
        return means
    # the same bits over the characters of the tokens scored (AR: of each row's 1..T-1)
    scored = scored_tokens(cfg, held)
    characters = sum(len(tokenizer.decode(row)) for row in scored)
    tokens_per_char = scored.numel() / characters
    return {**{k.replace("bpc", "bpt", 1): v for k, v in means.items()},
            **{k: v * tokens_per_char for k, v in means.items()},
            "chars_per_token": 1 / tokens_per_char}


def continue_prompts(cfg: Config, task: Task, nets: list[Block], prompts: torch.Tensor,
                     purpose: str, device: str, usable: Usable) -> torch.Tensor:
    """(N, gen_len) continuations of ``prompts`` (N, prompt_len) in the ``usable`` ids (the
    tokenizer's), on the CPU."""
    out = []
    with Progress(len(prompts), "continuing prompts", "prompt") as bar:
        for i, p in enumerate(_chunks(prompts)):
            out.append(task.generate(nets, p.to(device), cfg.sample.gen_len,
                                     generator(cfg.run.seed, purpose, i), usable=usable).cpu())
            bar.update(len(p))
    return torch.cat(out)


def char_entropy(ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Entropy in bits (N,) of the token histogram of each row of ``ids`` (N, G)."""
    counts = torch.zeros(len(ids), vocab_size).scatter_add_(1, ids, torch.ones(ids.shape))
    p = counts / counts.sum(dim=1, keepdim=True)
    return -(p * torch.log2(p.clamp_min(1e-30))).sum(dim=1)


def scorer_key(cfg: Config, tokenizer: Tokenizer, index: DataIndex) -> dict[str, str]:
    """What names the scorer's data: the corpus's cache key (its content, data.seq_len, the
    tokenizer's settings; data/corpus.py), so a file edited in place, or other data at the
    same data.path, trains a scorer of its own, and the vocabulary (for BPE, a hash of the
    tokenizer)."""
    d = cfg.data
    key = {"source": d.source, "corpus": str(index.meta.get("content", d.path))}
    if tokenizer.name == "char":
        return {**key, "vocab": "".join(tokenizer.describe()["vocab"])}
    # the tokenizer itself: its train ids do not change what the scorer reads
    own = {k: v for k, v in tokenizer.describe().items() if k != TRAIN_IDS_KEY}
    blob = json.dumps(own, sort_keys=True).encode()
    return {**key, "tokenizer": tokenizer.name, "vocab": hashlib.sha256(blob).hexdigest()}


def cpu_note(cfg: Config, index: DataIndex, tokenizer: Tokenizer, device: str) -> str | None:
    """On a CPU, the line naming the keys that shrink an ar or looped evaluation far larger
    than the training before it (scorer steps not yet cached, or prompts to continue, over
    ``FAR_MORE`` x the run's training steps); None otherwise."""
    if cfg.task not in ("ar", "looped") or torch.device(device).type != "cpu":
        return None
    s, d = cfg.sample, cfg.data
    trained = sum(cfg.train.steps_of(b) for b in range(cfg.model.blocks))
    work = {"sample.eval_samples": (s.eval_samples, "prompts to continue")}
    cached = scorer_path(scorer_key(cfg, tokenizer, index), index.num_rows("train"), d.seq_len,
                         d.vocab_size, s.scorer_steps).is_file()
    if not cached:
        work["sample.scorer_steps"] = (s.scorer_steps, "gen_ppl scorer steps")
    large = {k: v for k, v in work.items() if v[0] > FAR_MORE * trained}
    if not large:
        return None
    what = ", ".join(f"{n} {noun}" for n, noun in large.values())
    steps = f"{trained} training step{'s' * (trained != 1)}"
    return (f"evaluation: on a CPU this is far more work than the {steps} before it "
            f"({what}); lower {' and '.join(large)} to shrink it "
            f"(jobs/{cfg.task}_shakespeare_tiny.yaml sets them; gen_ppl compares only "
            f"between runs evaluated alike)")


def generation_metrics(cfg: Config, task: Task, nets: list[Block], index: DataIndex,
                       held: torch.Tensor, device: str) -> dict[str, float]:
    """gen_ppl and sample_entropy of continuations of held-out prompts, and the data's."""
    s, d = cfg.sample, cfg.data
    prompts, truth = held[:, :s.prompt_len], held[:, s.prompt_len:s.prompt_len + s.gen_len]
    tokenizer = load_tokenizer(index.meta)
    fake = continue_prompts(cfg, task, nets, prompts, "eval-gen", device, tokenizer.usable)
    scorer = cached_scorer(scorer_key(cfg, tokenizer, index), index.num_rows("train"),
                           d.seq_len, lambda rows: read_rows(cfg, index, "train", rows),
                           d.vocab_size, s.scorer_steps, device)
    gen_nll = torch.cat([continuation_nll(scorer, p, c)
                         for p, c in zip(_chunks(prompts), _chunks(fake), strict=True)])
    data_nll = torch.cat([continuation_nll(scorer, p, c)
                          for p, c in zip(_chunks(prompts), _chunks(truth), strict=True)])
    return {"gen_ppl": math.exp(float(gen_nll.mean())),
            "sample_entropy": float(char_entropy(fake, d.vocab_size).mean()),
            "data_ppl": math.exp(float(data_nll.mean())),
            "data_entropy": float(char_entropy(truth, d.vocab_size).mean())}


def training_memory(cfg: Config, index: DataIndex, device: str = "cpu") -> dict[str, float]:
    """Bytes of one training step of the looped core, DiffusionBlocks and BPTT alike, on the
    first ``train.batch_size`` training rows."""
    from dbparallel.training.block_trainer import BlockTrainer

    rows = np.arange(min(cfg.train.batch_size, index.num_rows("train")))
    tokens = read_rows(cfg, index, "train", rows)
    out: dict[str, float] = {}
    for objective, label in (("diffusionblocks", "diffusionblocks"), ("end_to_end", "bptt")):
        other = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train,
                                                                   objective=objective))
        trainer = BlockTrainer(other, 0, device)
        trainer.train_step({"tokens": tokens.to(device)})
        assert trainer.memory is not None
        out[f"train_memory_bytes_{label}"] = int(trainer.memory.total)
        out[f"train_activation_bytes_{label}"] = int(trainer.memory.activations)
    return out


def evaluate(cfg: Config, task: Task, nets: list[Block], index: DataIndex,
             device: str = "cpu") -> dict[str, float]:
    """BPC on the test split (else on training rows: ``eval_on_test`` 0); for AR and looped
    also the generation metrics."""
    tokenizer = load_tokenizer(index.meta)
    note = cpu_note(cfg, index, tokenizer, device)
    if note:
        print(note, file=sys.stderr, flush=True)  # stdout: results
    held = held_out(cfg, index, cfg.sample.eval_samples)
    metrics = bits_per_character(cfg, task, nets, held, device, tokenizer)
    metrics["eval_on_test"] = int(index.eval_split == "test")
    if cfg.task in ("ar", "looped"):
        metrics.update(generation_metrics(cfg, task, nets, index, held, device))
    if cfg.task == "looped":
        metrics.update(training_memory(cfg, index, device))
    return metrics


def sample_text(cfg: Config, task: Task, nets: list[Block], device: str = "cpu",
                index: DataIndex | None = None) -> bytes:
    """samples.txt: MDM samples from all-[MASK]; AR/looped continuations of test prompts of
    ``index`` (else of the configured data)."""
    if index is None:
        from dbparallel.data.sources import open_data

        index = open_data(cfg.data)
    tokenizer = load_tokenizer(index.meta)
    count, p = cfg.sample.text_samples, cfg.sample.prompt_len
    if cfg.task == "mdm":
        ids = task.generate(nets, count, generator(cfg.run.seed, "samples"), device,
                            usable=tokenizer.usable).cpu()
        texts = [tokenizer.decode(row) for row in ids]
    else:
        held = held_out(cfg, index, count)
        fake = continue_prompts(cfg, task, nets, held[:, :p], "samples", device,
                                tokenizer.usable)
        texts = [tokenizer.decode(a) + "\u2502" + tokenizer.decode(b)
                 for a, b in zip(held[:, :p], fake, strict=True)]
    sep = "\n" + "=" * 72 + "\n"
    B = cfg.model.blocks
    head = (f"{cfg.task}, {B} block{'s' if B != 1 else ''}, objective {cfg.train.objective}"
            + ("" if cfg.task == "mdm" else "; prompt \u2502 generated continuation"))
    return (head + sep + sep.join(texts) + "\n").encode("utf-8")
