"""Transformer blocks of the text tasks (docs/method.md, Losses: mdm and ar).

``MaskedLMBlock``: the masked diffusion LM's denoiser F(x_t, t), bidirectional.
``ARBlock``: the autoregressive denoiser over the [clean; noisy] sequence of length 2T. Clean
tokens are conditioned on a learned constant instead of sigma, so their keys and values do not
depend on the noise level: the clean stream runs once per sequence (a training step, a
teacher-forced chain, all iterations of BPTT) or once per generated token, and every Euler
step reuses it.
The same class without the noisy stream is the standard causal LM of the end-to-end baseline.
Positions enter as rotary embeddings of queries and keys (Su et al. 2021): a character model
learns to read its neighbours within a few hundred steps, where learned absolute position
embeddings left the masked model at the unigram rate.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from dbparallel.models.block import Block
from dbparallel.models.layers import CAUSAL, KV, AdaLNHead, SigmaEmbedder
from dbparallel.models.presets import ModelDims


def causal_mask(t: int, past: int = 0, device: torch.device | str | None = None
                ) -> torch.Tensor:
    """(t, past + t) bool: new clean token i (position past + i) sees every j <= past + i."""
    return (torch.arange(past + t, device=device)[None, :]
            <= torch.arange(past, past + t, device=device)[:, None])


def noisy_mask(t: int, past: int, start: int, device: torch.device | str | None = None
               ) -> torch.Tensor:
    """(t, past + t) bool: noisy token i at position start + i sees the clean positions
    j < start + i (of ``past`` cached ones) and itself, no other noisy token."""
    clean = (torch.arange(past, device=device)[None, :]
             < torch.arange(start, start + t, device=device)[:, None])
    return torch.cat([clean, torch.eye(t, dtype=torch.bool, device=device)], dim=1)


@functools.lru_cache(maxsize=32)
def cached_noisy_mask(t: int, past: int, start: int, device: torch.device) -> torch.Tensor:
    """``noisy_mask``, built once (read only): a training step's noisy stream has the same
    mask every step, and building it is five small kernels. Made outside inference mode, so
    that a mask first made for sampling can be saved for a training backward."""
    with torch.inference_mode(False):
        return noisy_mask(t, past, start, device)


def noisy_mask_is_full(t: int, past: int, start: int) -> bool:
    """Whether ``noisy_mask(t, past, start)`` allows everything (one noisy token after all
    ``past`` clean ones), so attention needs no mask: known without building it."""
    return t == 1 and past <= start


def ar_mask(T: int) -> torch.Tensor:
    """(2T, 2T) bool mask of the [clean; noisy] sequence, True = may attend: clean i sees
    clean j <= i; noisy i sees clean j < i and itself (block-diffusion vectorised training,
    Arriola et al. 2025). ``ARBlock`` runs it as the clean rows, then the noisy rows."""
    clean = torch.cat([causal_mask(T), torch.zeros(T, T, dtype=torch.bool)], dim=1)
    return torch.cat([clean, noisy_mask(T, T, 0)], dim=0)


class TextBlock(Block):
    """Private stem (token embedding; rotary positions) and head to logits."""

    def __init__(self, dims: ModelDims, vocab_size: int, embed_rows: int):
        super().__init__(dims)
        if (dims.hidden // dims.heads) % 2:
            raise ValueError(f"model.heads: rotary positions need an even head width, got "
                             f"{dims.hidden} / {dims.heads}")
        self.vocab_size = vocab_size
        self.token_embed = nn.Embedding(embed_rows, dims.hidden)
        self.head = AdaLNHead(dims.hidden, vocab_size)

    def initialize_weights(self) -> None:
        super().initialize_weights()
        nn.init.normal_(self.token_embed.weight, std=0.02)

    def zero_output(self) -> None:
        nn.init.zeros_(self.head.linear.weight)
        nn.init.zeros_(self.head.linear.bias)


class MaskedLMBlock(TextBlock):
    """F(x_t, t) -> logits of x_0 at every position; token id ``vocab_size`` is [MASK]."""

    def __init__(self, dims: ModelDims, vocab_size: int):
        super().__init__(dims, vocab_size, vocab_size + 1)
        self.t_embed = SigmaEmbedder(dims.hidden)
        self.initialize_weights()

    def forward(self, ids: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x = self.token_embed(ids)  # (N, T, D)
        c = self.t_embed(t)  # (N, D)
        pos = range(ids.shape[1])
        for layer in self.layers:
            x, _ = layer(x, c, None, pos)  # (N, T, D)
        return self.head(x, c)  # (N, T, V)


class ARBlock(TextBlock):
    """Denoiser of token embeddings given the clean prefix; ``E`` None = plain causal LM.

    ``readout="direct"``: ``classify`` reads the logits from the layers' output at the noisy
    tokens. ``"paper"``: those outputs pass a final norm and are the backbone F of the EDM
    denoiser in embedding space; the task forms D = c_skip z + c_out F and ``classify`` reads
    the logits from D."""

    def __init__(self, dims: ModelDims, vocab_size: int, E: torch.Tensor | None = None,
                 readout: str = "direct"):
        super().__init__(dims, vocab_size, vocab_size)
        self.clean_cond = nn.Parameter(torch.zeros(dims.hidden))
        self.denoiser = E is not None
        self.readout = readout
        if E is not None:
            # frozen targets: identical in every block, never trained or checkpointed
            self.register_buffer("E", E.to(torch.get_default_device()).clone(),
                                 persistent=False)
            self.noisy_embed = nn.Linear(E.shape[1], dims.hidden)
            self.sigma_embed = SigmaEmbedder(dims.hidden)
            if readout == "paper":
                assert E.shape[1] == dims.hidden, "F lives in the embedding space of E"
                self.final_norm = nn.LayerNorm(dims.hidden, eps=1e-6)
        self.initialize_weights()

    def forward(self, ids: torch.Tensor, z: torch.Tensor, c_noise: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(F (N, T, D), condition c (N, D)) of every noisy z_i (N, T, D), already scaled by
        c_in, at once: the [clean; noisy] pass under ``ar_mask``."""
        return self.denoise(z, c_noise, self.keys_values(ids), 0)

    def clean(self, ids: torch.Tensor, cache: list[KV] | None = None
              ) -> tuple[torch.Tensor, list[KV]]:
        """Clean-stream hidden states (N, t, D) of ``ids`` after the cached prefix, and the
        cache extended by them."""
        return self._clean(ids, cache, hidden=True)

    def keys_values(self, ids: torch.Tensor, cache: list[KV] | None = None) -> list[KV]:
        """The cache of ``clean`` alone, all that the noisy tokens read of the clean stream:
        its last layer computes its keys and values and nothing more."""
        return self._clean(ids, cache, hidden=False)[1]

    def _clean(self, ids: torch.Tensor, cache: list[KV] | None, hidden: bool
               ) -> tuple[torch.Tensor, list[KV]]:
        past = 0 if cache is None else cache[0][0].shape[2]
        t = ids.shape[1]
        x = self.token_embed(ids)  # (N, t, D)
        pos = range(past, past + t)
        mask = None if t == 1 else CAUSAL if past == 0 else causal_mask(t, past, ids.device)
        new = []
        c = self.clean_cond[None]  # (1, D): the same condition for every clean token
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            before = None if cache is None else cache[i]
            if i == last and not hidden:
                new.append(layer.keys_values(x, c, pos, before))
                break
            x, kv = layer(x, c, mask, pos, before)  # (N, t, D)
            new.append(kv)
        return x, new

    def clean_logits(self, h: torch.Tensor) -> torch.Tensor:
        """Next-token logits (N, t, V) of clean hidden states (the end-to-end model)."""
        return self.head(h, self.clean_cond[None].expand(len(h), -1))

    def causal_logits(self, ids: torch.Tensor) -> torch.Tensor:
        """Standard causal LM: logits (N, T, V) of x_{i+1} at every position i."""
        return self.clean_logits(self.clean(ids)[0])

    def denoise(self, z: torch.Tensor, c_noise: torch.Tensor, cache: list[KV],
                start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(F (N, t, D), condition c (N, D)) of the tokens at positions start .. start+t-1
        from noisy z (N, t, D) scaled by c_in. Only the noisy tokens run: the clean keys and
        values come from ``cache``, computed once (they do not depend on sigma) and reused by
        every step."""
        t, past = z.shape[1], cache[0][0].shape[2]
        pos = range(start, start + t)
        build = noisy_mask if torch.compiler.is_compiling() else cached_noisy_mask
        mask = None if noisy_mask_is_full(t, past, start) else build(t, past, start, z.device)
        x = self.noisy_embed(z)  # (N, t, D)
        c = self.sigma_embed(c_noise)  # (N, D)
        for layer, kv in zip(self.layers, cache, strict=True):
            x, _ = layer(x, c, mask, pos, kv)  # (N, t, D)
        return (self.final_norm(x) if self.readout == "paper" else x), c  # (N, t, D), (N, D)

    def classify(self, D: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Logits (N, t, V) of the denoised embeddings D (N, t, D) (paper readout) or of the
        layers' output (direct readout)."""
        return self.head(D, c)  # (N, t, V)
