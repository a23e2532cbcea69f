"""Autoregressive language model in embedding space (docs/method.md, Losses: ar; AR readout).

Target y_i = E[x_i], a row of the frozen unit-norm table E; block b denoises
z_i = y_i + sigma * eps_i given the clean tokens before i, for sigma in its equi-probability
range, with loss w(sigma) * CE(logits_i, x_i), w = 1/c_out^2 per sample. The logits are read
from the layers' output F(c_in z) directly (``model.ar_readout=direct``, the default: it
measured better) or from the denoiser D = c_skip z + c_out F in embedding space (``paper``).
One forward pass trains every position: the sequence is [clean; noisy] (2T) under the mask of
``models.lm.ar_mask``. Each new token is an Euler ODE solve from sigma_max, every step run by
the block that owns its sigma, with the expected embedding softmax(logits) @ E as the step's
denoised state; the final logits at sigma_min give the token. The end-to-end baseline is a
standard causal transformer trained with next-token cross-entropy.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from dbparallel.config import Config
from dbparallel.core.losses import weighted_cross_entropy
from dbparallel.core.precond import edm_coefficients, edm_weight, precondition
from dbparallel.core.sampler import equiprobable_schedule, karras_schedule, route
from dbparallel.data.tokenizer import Usable
from dbparallel.models.layers import KV
from dbparallel.models.lm import ARBlock
from dbparallel.models.presets import resolve
from dbparallel.tasks.base import Batch, Draws, gaussian_noise
from dbparallel.tasks.frozen_table import FrozenTable
from dbparallel.tasks.text import TextData, gumbel_sample


class AutoregressiveLM(TextData):
    """Next-token denoisers over [clean; noisy], one block per slice of sigma."""

    name = "ar"

    def __init__(self, cfg: Config, shapes_only: bool = False):
        super().__init__(cfg)
        n = cfg.noise
        self.noise, self.partition = gaussian_noise(cfg)
        self.sigma_data = n.sigma_data
        self._table = FrozenTable(cfg.run.seed, self.vocab_size, resolve(cfg.model).hidden,
                                  "data.vocab_size", shapes_only)
        self.readout = cfg.model.ar_readout
        # the end-to-end AR baseline is a plain causal LM; the looped task keeps the denoiser
        self.denoiser = cfg.train.objective == "diffusionblocks"

    @property
    def E(self) -> torch.Tensor:
        """The frozen token table, (vocab_size, hidden), drawn at its first use."""
        return self._table.tensor()

    @property
    def steps(self) -> int:
        """Euler steps (block calls) per generated token."""
        return self.cfg.sample.steps

    def build_block(self, block: int) -> ARBlock:
        return ARBlock(resolve(self.cfg.model), self.vocab_size,
                       self.E if self.denoiser else None, self.readout)

    # ------------------------------------------------------------------ training
    def logits(self, net: ARBlock, cache: list[KV], z: torch.Tensor, sigma: torch.Tensor,
               start: int = 0) -> torch.Tensor:
        """Logits (N, t, V) of the tokens at start.. from z (N, t, D) at noise sigma (N,),
        given the clean stream's keys and values ``cache``: head(D) with
        D = c_skip z + c_out F(c_in z, c_noise) (paper readout), or head(F) (direct)."""
        _, _, c_in, c_noise = edm_coefficients(sigma, self.sigma_data)
        F_x, c = net.denoise(c_in.view(-1, 1, 1) * z, c_noise, cache, start)  # (N, t, D), (N, D)
        if self.readout == "paper":
            F_x = precondition(F_x, z, sigma, self.sigma_data)  # D, (N, t, D)
        return net.classify(F_x, c)  # (N, t, V)

    def draw(self, block: int, batch: Batch, total: int, generator: torch.Generator) -> Draws:
        """sigma (N,), one per sequence, and eps (N, T, D); none for the causal LM."""
        if not self.denoiser:
            return {}
        lo, hi = self.partition.ranges[block]
        device, T = generator.device, batch["tokens"].shape[1]
        return {"sigma": self.noise.sample(total, lo, hi, generator, device=device),
                "eps": torch.randn(total, T, self.E.shape[1], generator=generator,
                                   device=device)}

    def loss_on(self, net: ARBlock, batch: Batch, block: int, draws: Draws) -> torch.Tensor:
        ids = batch["tokens"]  # (N, T)
        if not self.denoiser:
            logits = net.causal_logits(ids)  # (N, T, V)
            return weighted_cross_entropy(logits[:, :-1], ids[:, 1:], torch.ones(len(ids),
                                          device=ids.device))
        return self.denoising_loss(net, ids, draws["sigma"], draws["eps"])

    def denoising_loss(self, net: ARBlock, ids: torch.Tensor, sigma: torch.Tensor,
                       eps: torch.Tensor) -> torch.Tensor:
        """w(sigma) * mean over positions of CE(logits_i, x_i) per sample (N,), for ids (N, T)
        at noise sigma (N,), one per sequence, with noise eps (N, T, D)."""
        y = net.E[ids]  # (N, T, D)
        logits = self.logits(net, net.keys_values(ids), y + sigma.view(-1, 1, 1) * eps, sigma)
        return weighted_cross_entropy(logits, ids, edm_weight(sigma, self.sigma_data))  # (N,)

    # ------------------------------------------------------------------ inference
    def sigmas(self) -> torch.Tensor:
        """The descending sigma schedule of one token's ODE solve."""
        if self.cfg.sample.schedule == "karras":
            return karras_schedule(self.noise, self.steps)
        return equiprobable_schedule(self.noise, self.steps)

    def inference_blocks(self) -> list[int]:
        return route(self.sigmas(), self.partition)

    def euler(self, z: torch.Tensor, logits: torch.Tensor, E: torch.Tensor, sigma: float,
              sigma_next: float) -> torch.Tensor:
        """z' = z + (sigma' - sigma) (z - D)/sigma with D = softmax(logits) @ E."""
        D = logits.float().softmax(dim=-1) @ E  # (N, t, D)
        return z + (sigma_next - sigma) * (z - D) / sigma

    def chain(self, nets: list[ARBlock], ids: torch.Tensor,
              generator: torch.Generator) -> list[torch.Tensor]:
        """Teacher-forced ODE solve of every position at once: logits (N, T, V) per step."""
        sigmas = [float(s) for s in self.sigmas()]
        owners = [self.partition.owner(s) for s in sigmas]
        caches = {b: nets[b].keys_values(ids) for b in sorted(set(owners))}
        z = sigmas[0] * torch.randn(*ids.shape, self.E.shape[1], generator=generator)
        z = z.to(ids.device)
        out = []
        for k, (sigma, b) in enumerate(zip(sigmas, owners, strict=True)):
            net = nets[b]
            s = torch.full((len(ids),), sigma, device=z.device)
            out.append(self.logits(net, caches[b], z, s))
            if k + 1 < len(sigmas):
                z = self.euler(z, out[-1], net.E, sigma, sigmas[k + 1])
        return out

    @torch.no_grad()
    def bpc(self, nets: list[ARBlock], ids: torch.Tensor,
            generator: torch.Generator) -> dict[str, float]:
        """Teacher-forced bits per character of held-out ids (N, T), positions 1..T-1.

        ``bpc`` scores the final logits (at sigma_min); ``bpc_sigma_max`` the first step's,
        which see no information about the token: the model's p(x_i | x_<i)."""
        def bits(logits: torch.Tensor, shift: int) -> float:
            target = ids[:, 1:]
            logits = logits[:, 1 - shift:logits.shape[1] - shift]
            ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1))
            return float(ce) / math.log(2)

        if not self.denoiser:
            return {"bpc": bits(nets[0].causal_logits(ids), 1)}
        steps = self.chain(nets, ids, generator)
        return {"bpc": bits(steps[-1], 0), "bpc_sigma_max": bits(steps[0], 0)}

    @torch.no_grad()
    def generate(self, nets: list[ARBlock], prompt: torch.Tensor, n_new: int,
                 generator: torch.Generator, temperature: float = 1.0,
                 usable: Usable | None = None,
                 on_token: Callable[[], None] = lambda: None) -> torch.Tensor:
        """(N, n_new) token ids continuing ``prompt`` (N, P >= 1), each drawn at
        ``temperature`` from the final logits; the prompt's and every generated token's keys
        and values are computed once per block and reused by every step; only ``usable`` ids
        are drawn (``gumbel_sample``); ``on_token`` is called after each token is drawn."""
        if not self.denoiser:
            return self._generate_causal(nets[0], prompt, n_new, generator, temperature,
                                         usable, on_token)
        sigmas = [float(s) for s in self.sigmas()]
        owners = [self.partition.owner(s) for s in sigmas]
        caches = {b: nets[b].keys_values(prompt) for b in sorted(set(owners))}
        n, dim, out = len(prompt), self.E.shape[1], []
        for _ in range(n_new):
            z = sigmas[0] * torch.randn(n, 1, dim, generator=generator).to(prompt.device)
            for k, (sigma, b) in enumerate(zip(sigmas, owners, strict=True)):
                s = torch.full((n,), sigma, device=z.device)
                logits = self.logits(nets[b], caches[b], z, s, start=caches[b][0][0].shape[2])
                if k + 1 < len(sigmas):
                    z = self.euler(z, logits, nets[b].E, sigma, sigmas[k + 1])
            token = gumbel_sample(logits, generator, temperature, usable)  # final logits
            out.append(token)
            on_token()
            caches = {b: nets[b].keys_values(token, cache) for b, cache in caches.items()}
        return torch.cat(out, dim=1)

    def _generate_causal(self, net: ARBlock, prompt: torch.Tensor, n_new: int,
                         generator: torch.Generator, temperature: float,
                         usable: Usable | None = None,
                         on_token: Callable[[], None] = lambda: None) -> torch.Tensor:
        h, cache = net.clean(prompt)
        out = []
        for _ in range(n_new):
            token = gumbel_sample(net.clean_logits(h[:, -1:]), generator, temperature,
                                  usable)  # (N, 1)
            out.append(token)
            on_token()
            h, cache = net.clean(token, cache)
        return torch.cat(out, dim=1)
