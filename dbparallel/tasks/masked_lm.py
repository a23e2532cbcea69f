"""Masked diffusion language model, MD4-style (docs/method.md, Losses: mdm; Shi et al. 2024).

Each token of x_0 is replaced by [MASK] with probability 1 - alpha(t) = t. Block b owns a
slice of t, uniform in alpha (block 0 the highest t), and minimises its share of the ELBO
    int over its t of (-alpha'(t) / (1 - alpha(t))) * sum_{masked i} CE(f(x_t, t)_i, x_0i).
The end-to-end baseline is the same transformer with one block over the whole t range.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from dbparallel.config import Config
from dbparallel.core.losses import masked_diffusion_loss
from dbparallel.core.noise import MaskingNoise
from dbparallel.core.partition import Partition, uniform_time_partition
from dbparallel.data.tokenizer import Usable
from dbparallel.models.lm import MaskedLMBlock
from dbparallel.models.presets import resolve
from dbparallel.tasks.base import Batch, Draws
from dbparallel.tasks.text import TextData, gumbel_sample


class MaskedDiffusionLM(TextData):
    """Bidirectional denoisers of masked text, one block per slice of masking time t."""

    name = "mdm"

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.noise = MaskingNoise(cfg.noise.t_min)
        self.partition: Partition = uniform_time_partition(self.noise, cfg.model.blocks,
                                                           cfg.noise.gamma)
        self.mask_id = self.vocab_size

    def build_block(self, block: int) -> MaskedLMBlock:
        return MaskedLMBlock(resolve(self.cfg.model), self.vocab_size)

    def draw(self, block: int, batch: Batch, total: int, generator: torch.Generator) -> Draws:
        """t (N,), then one uniform u (N, T) per token, masked where u < 1 - alpha(t)."""
        lo, hi = self.partition.ranges[block]
        device, T = generator.device, batch["tokens"].shape[1]
        return {"t": self.noise.sample(total, lo, hi, generator, device=device),
                "u": torch.rand(total, T, generator=generator, device=device)}

    def corrupt(self, x0: torch.Tensor, t: torch.Tensor, u: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """x_t (N, T) and is_masked (N, T): each token masked with probability 1 - alpha(t),
        where its uniform draw u (N, T) is below it."""
        is_masked = u < (1 - self.noise.alpha(t))[:, None]
        return torch.where(is_masked, torch.full_like(x0, self.mask_id), x0), is_masked

    def loss_on(self, net: MaskedLMBlock, batch: Batch, block: int,
                draws: Draws) -> torch.Tensor:
        x0, t = batch["tokens"], draws["t"]  # (N, T), (N,)
        x_t, is_masked = self.corrupt(x0, t, draws["u"])
        logits = net(x_t, t)  # (N, T, V)
        # nats per character, so that the scale does not grow with data.seq_len
        return masked_diffusion_loss(logits, x0, is_masked, self.noise.weight(t)) / x0.shape[1]

    def routed_logits(self, nets: list[MaskedLMBlock], x_t: torch.Tensor,
                      t: torch.Tensor, step: bool = False) -> torch.Tensor:
        """Logits (N, T, V), each row computed by the block that owns its t (``step``: of a
        generation step down from t, where a t on a boundary goes to the less noisy block)."""
        owner = self.partition.owner_of_step if step else self.partition.owner
        owners = torch.tensor([owner(x) for x in t.tolist()])  # one read
        logits = torch.empty(*x_t.shape, self.vocab_size, device=x_t.device)
        for b in owners.unique().tolist():
            rows = (owners == b).nonzero().squeeze(1).to(x_t.device)
            logits[rows] = nets[b](x_t[rows], t[rows]).float()
        return logits

    @torch.no_grad()
    def nll(self, nets: list[MaskedLMBlock], x0: torch.Tensor, generator: torch.Generator,
            draws: int) -> torch.Tensor:
        """-ELBO in nats per sequence (N,), unbiased, with ``draws`` stratified draws.

        With alpha(t) = 1 - t the number k of masked tokens is Binomial(T, t), and the
        integral of 1/t against it gives the ELBO as sum_k (1/k) E_{|M|=k}[sum_{i in M} CE_i]
        with t | k ~ Beta(k, T - k + 1) (the order-agnostic form; Hoogeboom et al. 2022):
        the estimate (T/k) sum_{i in M} CE_i has bounded weights where (1/t) does not."""
        n, T = x0.shape
        total = torch.zeros(n, dtype=torch.float64, device=x0.device)
        for d in range(draws):
            u = torch.rand(n, generator=generator, dtype=torch.float64)
            k = (((d + u) / draws * T).floor().long() + 1).clamp(max=T)  # (N,) uniform in 1..T
            # t | k: the k-th smallest of T uniforms; below t_min the lowest block serves it
            order = torch.rand(n, T, generator=generator).sort(dim=1).values
            t = order.gather(1, (k - 1)[:, None]).squeeze(1).clamp_min(self.noise.t_min)
            # M: k positions chosen uniformly
            rank = torch.rand(n, T, generator=generator).argsort(dim=1).argsort(dim=1)
            is_masked = (rank < k[:, None]).to(x0.device)  # (N, T)
            x_t = torch.where(is_masked, torch.full_like(x0, self.mask_id), x0)
            logits = self.routed_logits(nets, x_t, t.to(x0.device))
            weight = (T / k).to(x0.device)
            total += masked_diffusion_loss(logits, x0, is_masked, weight).double()
        return total / draws

    def bpc(self, nets: list[MaskedLMBlock], x0: torch.Tensor,
            generator: torch.Generator) -> dict[str, float]:
        """Bits per character of held-out sequences x0 (N, T) from the ELBO."""
        nats = self.nll(nets, x0, generator, self.cfg.sample.elbo_draws)
        return {"bpc": float(nats.mean()) / (x0.shape[1] * math.log(2))}

    def inference_blocks(self) -> list[int]:
        steps = self.cfg.sample.steps
        return [self.partition.owner_of_step(1 - j / steps) for j in range(steps)]

    @torch.no_grad()
    def generate(self, nets: list[MaskedLMBlock], n: int, generator: torch.Generator,
                 device: str | torch.device = "cpu", prompt: torch.Tensor | None = None,
                 length: int | None = None, temperature: float = 1.0,
                 usable: Usable | None = None,
                 on_step: Callable[[], None] = lambda: None) -> torch.Tensor:
        """(n, length) token ids (default data.seq_len) by ancestral unmasking from
        all-[MASK] at t = 1 to t = 0 in sample.steps steps; a ``prompt`` (n, P) fixes the
        first P tokens, which stay as given (the blocks see them unmasked from the first
        step); only ``usable`` ids are drawn (``gumbel_sample``); ``on_step`` is called after
        each unmasking step."""
        steps = self.cfg.sample.steps
        x = torch.full((n, length or self.seq_len), self.mask_id, dtype=torch.long,
                       device=device)
        if prompt is not None:
            x[:, :prompt.shape[1]] = prompt.to(device)
        for j in range(steps):
            t, s = 1 - j / steps, 1 - (j + 1) / steps
            logits = self.routed_logits(nets, x, torch.full((n,), t, device=device),
                                        step=True)
            # p(unmask at s | masked at t) = (alpha(s) - alpha(t)) / (1 - alpha(t)) = (t - s)/t
            u = torch.rand(x.shape, generator=generator).to(device)
            reveal = (x == self.mask_id) & (u < (t - s) / t)
            x = torch.where(reveal, gumbel_sample(logits, generator, temperature, usable),
                            x)
            on_step()
        return x
