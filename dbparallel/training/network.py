"""The composed network of a run, with its task's verbs: what ``dbparallel.load`` returns.

A ``Network`` holds every block's EMA weights, block 0 (highest noise) first, and the run's
config; it is built from a run directory (local path or object-store URI) or from a file that
``dbparallel export`` wrote (training/export.py). Nothing here needs Ray or the training data:

- DiT: ``sample(labels, steps=, cfg_scale=)`` -> images (N, C, H, W) in [0, 1];
- ViT: ``predict(images)`` -> logits (N, classes);
- text (mdm, ar, looped): ``generate(prompt, max_new=, temperature=)`` -> text,
  ``bpc(texts)`` and ``log_likelihood(texts)``.

The CLI's ``eval``, ``sample``, ``generate`` and ``predict`` go through this class, as does
the assembly during and after training (training/assemble.py).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from dbparallel.config import Config
from dbparallel.data.shards import DataIndex
from dbparallel.data.tokenizer import Tokenizer
from dbparallel.errors import UserError
from dbparallel.models.block import Block
from dbparallel.tasks import Task, build_task
from dbparallel.training.arguments import images_of, labels_of, number, texts_of
from dbparallel.training.block_weights import loaded_blocks
from dbparallel.training.device import requested_device
from dbparallel.training.precision import in_run_precision
from dbparallel.training.seeding import generator

log = logging.getLogger(__name__)

VERBS = {"dit": ("sample",), "vit": ("predict",),
         **{t: ("generate", "bpc", "log_likelihood") for t in ("mdm", "ar", "looped")}}


def _bar(total: int, desc: str, unit: str, show: bool) -> tqdm:
    """A progress bar on stderr of ``total`` ``unit``s, drawn only when ``show``."""
    return tqdm(total=total, desc=desc, unit=unit, disable=not show, leave=False)


def article(word: str) -> str:
    """"a" or "an" before ``word`` as it is read aloud (an ar, an mdm, a dit)."""
    return "an" if word[:1] in "aeiou" or word in ("mdm",) else "a"


@dataclass
class Network:
    """A run's blocks composed into one network. ``steps[b]`` is the step block b's weights
    come from; ``tokenizer`` is the text tasks' (None for images); ``class_names`` an
    image network's label names (vit, dit), by label, where its data name them (else
    empty)."""

    cfg: Config
    task: Task
    blocks: list[Block]
    steps: list[int]
    device: str
    tokenizer: Tokenizer | None = None
    class_names: list[str] = field(default_factory=list)
    # the lengths past data.seq_len that generate has warned of (once each, not per call)
    _warned_lengths: set[int] = field(default_factory=set, init=False, repr=False,
                                      compare=False)

    @classmethod
    def from_weights(cls, cfg: Config, weights: list[dict[str, torch.Tensor]],
                     steps: list[int], device: str | None = None,
                     tokenizer: Tokenizer | None = None) -> Network:
        """The network of ``weights`` (one state dict per block, block 0 first); RunDirError
        naming the block and tensor where one does not fit the network of ``cfg``."""
        task = build_task(cfg)
        device = requested_device(device)
        return cls(cfg, task, loaded_blocks(task, weights, device), list(steps), device,
                   tokenizer)

    # ------------------------------------------------------------------ what it is
    @property
    def verbs(self) -> tuple[str, ...]:
        """What this network can do, by its task."""
        return VERBS[self.cfg.task]

    def _need(self, verb: str) -> None:
        if verb not in self.verbs:
            raise UserError(f"{verb}: {article(self.cfg.task)} {self.cfg.task} network cannot "
                            f"{verb}; it can "
                            f"{', '.join(self.verbs)}")

    def __repr__(self) -> str:
        return (f"Network(task={self.cfg.task!r}, blocks={len(self.blocks)}, "
                f"steps={self.steps}, device={self.device!r}, verbs={list(self.verbs)})")

    # ------------------------------------------------------------------ run-level
    @in_run_precision
    def evaluate(self, index: DataIndex) -> dict[str, float]:
        """The task's quality metrics on ``index``'s test split (report.json ``assembly``)."""
        from dbparallel.training.eval import evaluate

        metrics = evaluate(self.cfg, self.task, self.blocks, index, self.device)
        metrics["block_steps_min"] = min(self.steps)
        return metrics

    @in_run_precision
    def diagnose(self, index: DataIndex) -> dict:
        """Where quality is lost: the loss per noise level, block by block, on held-out rows
        of ``index`` (and ViT's accuracy after each step); training/eval/diagnostics.py."""
        from dbparallel.training.eval.diagnostics import diagnose, held_out_batch

        batch = held_out_batch(self.task, index, self.device, self.cfg.sample.diagnostic_rows)
        return diagnose(self.cfg, self.task, self.blocks, batch)

    @in_run_precision
    def artifact(self, index: DataIndex | None = None) -> tuple[str, bytes]:
        """(file name, contents) of the run's sample artifact (samples.png, ...)."""
        from dbparallel.training.eval import sample_artifact

        return sample_artifact(self.cfg, self.task, self.blocks, self.device, index)

    # ------------------------------------------------------------------ DiT
    @torch.no_grad()
    @in_run_precision
    def sample(self, labels: list[int] | torch.Tensor, steps: int | None = None,
               cfg_scale: float | None = None, seed: int = 0) -> torch.Tensor:
        """Images (N, C, H, W) in [0, 1] of classes ``labels`` (with data.latents, latents as
        the data store them, for the autoencoder to decode), from ``steps`` solver steps with
        classifier-free guidance ``cfg_scale`` (defaults: the run's sample.*)."""
        self._need("sample")
        labels = labels_of(labels, self.cfg.data.num_classes)
        number(seed, "seed", whole=True)
        if steps is not None:
            number(steps, "steps", whole=True)
            if steps < 1:
                raise UserError(f"steps: must be >= 1, got {steps}")
        if cfg_scale is not None:
            number(cfg_scale, "cfg_scale")
            if not (math.isfinite(cfg_scale) and cfg_scale >= 0):
                raise UserError(f"cfg_scale: must be a finite number >= 0 (1: no guidance), "
                                f"got {cfg_scale}")
        return self.task.generate(self.blocks, labels.to(self.device),
                                  generator(self.cfg.run.seed, "api-sample", seed),
                                  steps, cfg_scale).cpu()

    # ------------------------------------------------------------------ ViT
    @torch.no_grad()
    @in_run_precision
    def predict(self, images: torch.Tensor | np.ndarray, seed: int = 0) -> torch.Tensor:
        """Logits (N, classes) of images (N, C, H, W), or one image (C, H, W): floats in
        [0, 1], or uint8 pixels (with data.latents, latents as the data store them)."""
        self._need("predict")
        number(seed, "seed", whole=True)
        d = self.cfg.data
        x = images_of(images, d.channels, d.image_size, d.latents)
        return self.task.predict(self.blocks, self.task.from_stored(x.to(self.device, copy=True)),
                                 generator(self.cfg.run.seed, "api-predict", seed)).cpu()

    # ------------------------------------------------------------------ text
    def _encode(self, text: str, name: str = "") -> list[int]:
        """The ids of ``text``; a UserError naming it (``name``: ``texts[1]``, where given) and
        every character the run's vocabulary lacks (data/tokenizer.py, unknown_characters)."""
        assert self.tokenizer is not None
        try:
            return self.tokenizer.encode(text)
        except UserError as err:
            where = f"{name}: " if name else ""
            raise UserError(f"{where}{err} of this run (data.tokenizer={self.tokenizer.name})")\
                from None

    @torch.no_grad()
    @in_run_precision
    def generate(self, prompt: str | list[str], max_new: int | None = None,
                 temperature: float = 1.0, seed: int = 0,
                 progress: bool = False) -> str | list[str]:
        """The continuation of ``prompt`` (one text, or a list of texts of equal token length),
        ``max_new`` tokens drawn at ``temperature`` (0: the most likely token; the chain
        still starts from noise, so ``seed`` matters at any temperature). AR and looped
        continue any length (default sample.gen_len; past data.seq_len tokens in all the
        network reads further than it was trained to, and a warning says so); MDM unmasks a
        whole data.seq_len row after the prompt over sample.steps steps, as it trained on, and
        gives its first ``max_new`` tokens (default: all; at most the row's rest). ``progress``
        shows a bar on stderr (tokens, or MDM's unmasking steps)."""
        self._need("generate")
        texts, one = texts_of(prompt, "prompt")
        if not texts:
            raise UserError("prompt: an empty list, no prompt to continue; give a string or "
                            "a list of strings")
        number(temperature, "temperature"), number(seed, "seed", whole=True)
        if max_new is not None:
            number(max_new, "max_new", whole=True)
        ids = [self._encode(t, "prompt" if one else f"prompt[{i}]") for i, t in enumerate(texts)]
        if len({len(i) for i in ids}) > 1:
            raise UserError("prompt: a list of prompts must have the same number of tokens; "
                            "generate them one at a time")
        if temperature < 0 or not math.isfinite(temperature):
            raise UserError(f"temperature: must be a finite number >= 0, got {temperature}")
        p = torch.tensor(ids, dtype=torch.long).reshape(len(texts), -1).to(self.device)
        g = generator(self.cfg.run.seed, "api-generate", seed)
        if self.cfg.task == "mdm":
            room = self.cfg.data.seq_len - p.shape[1]
            max_new = room if max_new is None else max_new
            if room < 1:
                raise UserError(f"prompt: {p.shape[1]} tokens, and an MDM row holds data.seq_len="
                                f"{self.cfg.data.seq_len}: leave room for at least one new "
                                f"token")
            if max_new < 1 or max_new > room:
                raise UserError(f"max_new: an MDM row holds data.seq_len="
                                f"{self.cfg.data.seq_len} tokens, the prompt {p.shape[1]}: "
                                f"max_new must lie in 1..{room}, got {max_new}")
            # the whole row, as in training: a shorter one would end where no row it learned
            # from ends; its first max_new new tokens are a sample of their marginal
            with _bar(self.cfg.sample.steps, "unmasking", "step", progress) as bar:
                rows = self.task.generate(self.blocks, len(texts), g, self.device, prompt=p,
                                          length=self.cfg.data.seq_len,
                                          temperature=temperature,
                                          usable=self.tokenizer.usable, on_step=bar.update)
            new = rows[:, p.shape[1]:p.shape[1] + max_new]
        else:
            max_new = self.cfg.sample.gen_len if max_new is None else max_new
            if p.shape[1] < 1:
                raise UserError(f"prompt: is empty; {article(self.cfg.task)} "
                                f"{self.cfg.task} network continues a prompt of at least one "
                                f"token")
            if max_new < 1:
                raise UserError(f"max_new: must be >= 1, got {max_new}")
            length = p.shape[1] + max_new
            if length > self.cfg.data.seq_len and length not in self._warned_lengths:
                self._warned_lengths.add(length)
                log.warning("generate: the prompt's %d tokens and %d new ones go past "
                            "data.seq_len=%d, the longest text the network was trained on; "
                            "tokens after that read further back than it learned to",
                            p.shape[1], max_new, self.cfg.data.seq_len)
            with _bar(max_new, "generating", "token", progress) as bar:
                new = self.task.generate(self.blocks, p, max_new, g, temperature,
                                         self.tokenizer.usable, on_token=bar.update)
        out = [self.tokenizer.decode(row) for row in new.cpu()]
        return out[0] if one else out

    def _bits(self, text: str, name: str, seed: int) -> tuple[float, int]:
        """(bits, characters scored) of one text, in windows of data.seq_len tokens; a
        UserError naming the text (``name``) when it has no token to score."""
        assert self.tokenizer is not None
        ids = torch.tensor(self._encode(text, name), dtype=torch.long)
        mdm = self.cfg.task == "mdm"
        if len(ids) < (1 if mdm else 2):
            shown = text if len(text) <= 40 else text[:37] + "..."
            task = self.cfg.task
            why = ("an mdm network scores the tokens of a text, and it has none" if mdm else
                   f"{article(task)} {task} network scores each token given the ones before "
                   f"it, so a text needs at least 2 tokens")
            raise UserError(f"{name} {shown!r}: {len(ids)} token{'s' * (len(ids) != 1)} "
                            f"(data.tokenizer={self.tokenizer.name}); {why}")
        from dbparallel.training.eval.text import likelihood_bpc, scored_tokens

        T, bits, chars = self.cfg.data.seq_len, 0.0, 0
        for k, window in enumerate(ids.split(T)):
            scored = scored_tokens(self.cfg, window)  # AR: given the first
            if len(scored) == 0:
                continue
            g = generator(self.cfg.run.seed, "api-bpc", seed, k)
            scores = self.task.bpc(self.blocks, window[None].to(self.device), g)
            # an ar or looped chain: its first step's p(x_i | x_<i), not the final logits',
            # which measure the sampler (training/eval/text.py, BPC_NOTE)
            per_token = likelihood_bpc(self.cfg, scores)
            bits += per_token * len(scored)
            chars += len(self.tokenizer.decode(scored))
        return bits, chars

    def _scores(self, texts: str | list[str], seed: int) -> list[tuple[float, int]]:
        listed, one = texts_of(texts, "texts")
        number(seed, "seed", whole=True)
        return [self._bits(t, "text" if one else f"texts[{i}]", seed)
                for i, t in enumerate(listed)]

    @in_run_precision
    def bpc(self, texts: str | list[str], seed: int = 0) -> float:
        """Bits per character over ``texts`` (AR and looped: each data.seq_len window's tokens
        after its first, teacher forced, from the chain's first step, the network's own
        p(x_i | x_<i), as report.json's bpc_sigma_max; MDM: the ELBO, an upper bound). A
        text with nothing to score (AR: under 2 tokens; MDM: empty) is refused, naming it."""
        self._need("bpc")
        pairs = self._scores(texts, seed)
        if not pairs:
            raise UserError("texts: no text to score")
        return sum(b for b, _ in pairs) / sum(c for _, c in pairs)

    @in_run_precision
    def log_likelihood(self, texts: str | list[str], seed: int = 0) -> list[float]:
        """log p(text) in nats per text, from the scores of ``bpc`` (AR and looped: of each
        window's tokens given its first; MDM: the ELBO's lower bound). A text with nothing
        to score is refused, as by ``bpc``."""
        self._need("log_likelihood")
        return [-bits * math.log(2) for bits, _ in self._scores(texts, seed)]

