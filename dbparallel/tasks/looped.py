"""Looped (weight-tied, recurrent-depth) transformer LM (docs/method.md, Losses: looped).

One core, B = 1, applied K = ``model.loop_iterations`` times at inference as K Euler steps of
the autoregressive task's ODE. DiffusionBlocks trains it with one pass of the core per step
at a random sigma: no unrolling, so training memory does not grow with K. The end-to-end
baseline is the same looped model unrolled through its K iterations from sigma_max and
trained by backpropagation through time on the final logits; ``train.bptt_truncate`` keeps
the gradient of the last iterations only (the earlier ones run without a graph). The clean
prefix does not depend on the iterate, so both run it once per step; BPTT keeps the noisy
stream's activations of every iteration it backpropagates through.
"""

from __future__ import annotations

import torch

from dbparallel.config import Config
from dbparallel.core.losses import weighted_cross_entropy
from dbparallel.models.lm import ARBlock
from dbparallel.tasks.autoregressive import AutoregressiveLM
from dbparallel.tasks.base import Batch, Draws


class LoopedLM(AutoregressiveLM):
    """The autoregressive denoiser as one weight-tied core iterated K times."""

    name = "looped"

    def __init__(self, cfg: Config, shapes_only: bool = False):
        super().__init__(cfg, shapes_only)
        self.denoiser = True  # both objectives train the same denoising core
        self.bptt = cfg.train.objective == "end_to_end"
        # the unrolled core's noise levels, as numbers: a constant of the compiled step
        self.iteration_sigmas = [float(s) for s in self.sigmas()]

    @property
    def steps(self) -> int:
        return self.cfg.model.loop_iterations

    @property
    def backprop_iterations(self) -> int:
        """Iterations of the unrolled core that keep their graph (BPTT baseline)."""
        truncate = self.cfg.train.bptt_truncate
        return min(truncate, self.steps) if truncate else self.steps

    def draw(self, block: int, batch: Batch, total: int, generator: torch.Generator) -> Draws:
        """As the AR task's; BPTT: the unit noise z (N, T, D) of the first iteration."""
        if not self.bptt:
            return super().draw(block, batch, total, generator)
        T = batch["tokens"].shape[1]
        return {"z": torch.randn(total, T, self.E.shape[1], generator=generator,
                                 device=generator.device)}

    def loss_on(self, net: ARBlock, batch: Batch, block: int, draws: Draws) -> torch.Tensor:
        if not self.bptt:
            return super().loss_on(net, batch, block, draws)
        ids = batch["tokens"]  # (N, T)
        sigmas = self.iteration_sigmas
        z = sigmas[0] * draws["z"]  # (N, T, D)
        cache = net.keys_values(ids)  # the clean stream does not change between iterations
        first_graph = len(sigmas) - self.backprop_iterations
        for k, sigma in enumerate(sigmas):
            with torch.set_grad_enabled(k >= first_graph and torch.is_grad_enabled()):
                s = torch.full((len(ids),), sigma, device=z.device)
                logits = self.logits(net, cache, z, s)
                if k + 1 < len(sigmas):
                    z = self.euler(z, logits, net.E, sigma, sigmas[k + 1])
        return weighted_cross_entropy(logits, ids, torch.ones(len(ids), device=ids.device))
