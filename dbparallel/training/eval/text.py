"""Evaluation of the composed text models on the test split, and their text samples.

``bpc``: bits per character of held-out sequences (MDM: the ELBO; AR and looped: teacher
forced). AR and looped also continue held-out prompts: ``gen_ppl`` is the continuations'
per-character perplexity under the project's own end-to-end scoring LM (training/eval/
scorer.py, trained once and cached), ``sample_entropy`` the mean entropy in bits of each
continuation's character histogram; ``data_ppl`` and ``data_entropy`` are the same numbers for
the true continuations. The looped model reports the training memory of one step of both
objectives (DiffusionBlocks: one core pass; BPTT: K unrolled passes).
"""

from __future__ import annotations

import dataclasses
import math

import pyarrow as pa
import torch

from dbparallel.config import Config
from dbparallel.data.text import decode, text_tokens
from dbparallel.models.block import Block
from dbparallel.tasks import Task
from dbparallel.training.eval.scorer import cached_scorer, continuation_nll
from dbparallel.training.seeding import generator
from dbparallel.training.storage import Storage

CHUNK = 128  # sequences per evaluation forward pass


def held_out(cfg: Config, table: pa.Table, count: int) -> tuple[torch.Tensor, str]:
    """``count`` test sequences spread evenly over the test split, and the vocabulary."""
    d = cfg.data
    test, vocab = text_tokens(table, d.seq_len, d.vocab_size, "test")
    rows = torch.linspace(0, len(test) - 1, min(count, len(test))).round().long()
    return test[rows], vocab


def _chunks(x: torch.Tensor) -> list[torch.Tensor]:
    return list(x.split(CHUNK))


def bits_per_character(cfg: Config, task: Task, nets: list[Block], held: torch.Tensor,
                       device: str) -> dict[str, float]:
    """The task's BPC metrics averaged over ``held`` in chunks."""
    sums: dict[str, float] = {}
    for i, chunk in enumerate(_chunks(held)):
        g = generator(cfg.run.seed, "eval-bpc", i)
        for k, v in task.bpc(nets, chunk.to(device), g).items():
            sums[k] = sums.get(k, 0.0) + v * len(chunk)
    return {k: v / len(held) for k, v in sums.items()}


def continue_prompts(cfg: Config, task: Task, nets: list[Block], prompts: torch.Tensor,
                     purpose: str, device: str) -> torch.Tensor:
    """(N, gen_len) continuations of ``prompts`` (N, prompt_len), on the CPU."""
    out = [task.generate(nets, p.to(device), cfg.sample.gen_len,
                         generator(cfg.run.seed, purpose, i)).cpu()
           for i, p in enumerate(_chunks(prompts))]
    return torch.cat(out)


def char_entropy(ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Entropy in bits (N,) of the character histogram of each row of ``ids`` (N, G)."""
    counts = torch.zeros(len(ids), vocab_size).scatter_add_(1, ids, torch.ones(ids.shape))
    p = counts / counts.sum(dim=1, keepdim=True)
    return -(p * torch.log2(p.clamp_min(1e-30))).sum(dim=1)


def generation_metrics(cfg: Config, task: Task, nets: list[Block], table: pa.Table,
                       held: torch.Tensor, device: str) -> dict[str, float]:
    """gen_ppl and sample_entropy of continuations of held-out prompts, and the data's."""
    s, d = cfg.sample, cfg.data
    prompts, truth = held[:, :s.prompt_len], held[:, s.prompt_len:s.prompt_len + s.gen_len]
    fake = continue_prompts(cfg, task, nets, prompts, "eval-gen", device)
    train, vocab = text_tokens(table, d.seq_len, d.vocab_size, "train")
    key = {"source": d.source, "path": d.path, "vocab": vocab}
    scorer = cached_scorer(key, train, d.vocab_size, s.scorer_steps, device)
    gen_nll = torch.cat([continuation_nll(scorer, p, c)
                         for p, c in zip(_chunks(prompts), _chunks(fake), strict=True)])
    data_nll = torch.cat([continuation_nll(scorer, p, c)
                          for p, c in zip(_chunks(prompts), _chunks(truth), strict=True)])
    return {"gen_ppl": math.exp(float(gen_nll.mean())),
            "sample_entropy": float(char_entropy(fake, d.vocab_size).mean()),
            "data_ppl": math.exp(float(data_nll.mean())),
            "data_entropy": float(char_entropy(truth, d.vocab_size).mean())}


def training_memory(cfg: Config, table: pa.Table, device: str = "cpu") -> dict[str, float]:
    """Bytes of one training step of the looped core, DiffusionBlocks and BPTT alike."""
    from dbparallel.training.block_trainer import BlockTrainer

    out: dict[str, float] = {}
    for objective, label in (("diffusionblocks", "diffusionblocks"), ("end_to_end", "bptt")):
        other = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train,
                                                                   objective=objective))
        trainer = BlockTrainer(other, 0, device)
        tokens = trainer.task.prepare(table)["tokens"][:cfg.train.batch_size].to(device)
        trainer.train_step({"tokens": tokens})
        assert trainer.memory is not None
        out[f"train_memory_bytes_{label}"] = float(trainer.memory.total)
        out[f"train_activation_bytes_{label}"] = float(trainer.memory.activations)
    return out


def evaluate(cfg: Config, task: Task, nets: list[Block], table: pa.Table,
             device: str = "cpu") -> dict[str, float]:
    """BPC on the test split; for AR and looped also the generation metrics."""
    held, _ = held_out(cfg, table, cfg.sample.eval_samples)
    metrics = bits_per_character(cfg, task, nets, held, device)
    if cfg.task in ("ar", "looped"):
        metrics.update(generation_metrics(cfg, task, nets, table, held, device))
    if cfg.task == "looped":
        metrics.update(training_memory(cfg, table, device))
    return metrics


def sample_text(cfg: Config, task: Task, nets: list[Block], device: str = "cpu") -> bytes:
    """samples.txt: MDM samples from all-[MASK]; AR/looped continuations of test prompts.
    Writes the vocabulary to the run directory as vocab.json."""
    from dbparallel.data.sources import load_table

    count, p = cfg.sample.text_samples, cfg.sample.prompt_len
    held, vocab = held_out(cfg, load_table(cfg.data), count)
    Storage(cfg.run_dir).write_json("vocab.json", {"vocab": list(vocab)})
    if cfg.task == "mdm":
        ids = task.generate(nets, count, generator(cfg.run.seed, "samples"), device).cpu()
        texts = [decode(row, vocab) for row in ids]
    else:
        fake = continue_prompts(cfg, task, nets, held[:, :p], "samples", device)
        texts = [decode(a, vocab) + "\u2502" + decode(b, vocab)
                 for a, b in zip(held[:, :p], fake, strict=True)]
    sep = "\n" + "=" * 72 + "\n"
    head = (f"{cfg.task}, {cfg.model.blocks} block(s), objective {cfg.train.objective}"
            + ("" if cfg.task == "mdm" else "; prompt \u2502 generated continuation"))
    return (head + sep + sep.join(texts) + "\n").encode("utf-8")
