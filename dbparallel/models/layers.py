"""Transformer building blocks with adaLN-Zero conditioning (DiT, Peebles & Xie 2023)."""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

#################################################################################
#                         Embeddings of sigma and labels                        #
#################################################################################


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(N,) -> (N, dim) cosine/sine features with periods from 2*pi to max_period."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # (N, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class SigmaEmbedder(nn.Module):
    """Embeds c_noise = ln(sigma)/4 into a conditioning vector."""

    # c_noise spans about [-1.6, 1.1]; stretching it by 1000 spreads it over all frequencies,
    # as DiT's timestep embedder does for t in [0, 1000].
    scale = 1000.0

    def __init__(self, hidden: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        return self.mlp(sinusoidal_embedding(c_noise * self.scale, self.freq_dim))  # (N, D)


class LabelEmbedder(nn.Module):
    """Class labels -> vectors; index ``num_classes`` is the null label of guidance."""

    def __init__(self, num_classes: int, hidden: int):
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, hidden)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.table(labels)  # (N, D)


def sincos_pos_embed_2d(dim: int, grid: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding, (grid*grid, dim)."""
    coords = torch.arange(grid, dtype=torch.float64)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    def axis(pos: torch.Tensor, d: int) -> torch.Tensor:
        omega = 1.0 / 10000 ** (torch.arange(d // 2, dtype=torch.float64) / (d / 2))
        out = pos.reshape(-1, 1) * omega[None]
        return torch.cat([torch.sin(out), torch.cos(out)], dim=1)
    return torch.cat([axis(yy, dim // 2), axis(xx, dim // 2)], dim=1).float()


#################################################################################
#                                 Patches                                       #
#################################################################################


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, H*W/p^2, p*p*C)."""
    n, c, h, w = x.shape
    x = x.reshape(n, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(n, (h // p) * (w // p), p * p * c)


def unpatchify(x: torch.Tensor, p: int, c: int) -> torch.Tensor:
    """(N, T, p*p*C) -> (N, C, H, W) for a square image."""
    n, t, _ = x.shape
    g = int(round(math.sqrt(t)))
    x = x.reshape(n, g, g, p, p, c)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(n, c, g * p, g * p)


#################################################################################
#                              Transformer layer                                #
#################################################################################


KV = tuple[torch.Tensor, torch.Tensor]  # keys, values of one layer, each (N, H, S, D/H)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


# The positions of t tokens: a range (start, start + 1, ...), or any (t,) tensor of them
Positions = range | torch.Tensor


def rotary(x: torch.Tensor, pos: Positions) -> torch.Tensor:
    """x (N, H, t, d) with each pair (x_j, x_{j+d/2}) rotated by pos * 10000^(-2j/d)
    (rotary position embedding, Su et al. 2021), for the t positions ``pos``."""
    half = x.shape[-1] // 2
    cached = isinstance(pos, range) and not torch.compiler.is_compiling()
    angles = _cached_rotary_angles if cached else _rotary_angles
    cos, sin = angles(pos, half, x.device, x.dtype)  # each (t, d/2)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def _rotary_angles(pos: Positions, half: int, device: torch.device, dtype: torch.dtype
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (t, half) of the angles pos * 10000^(-j/half), in ``dtype``."""
    freqs = 10000.0 ** (-torch.arange(half, dtype=torch.float32, device=device) / half)
    positions = pos.to(device) if isinstance(pos, torch.Tensor) else \
        torch.arange(pos.start, pos.stop, pos.step, device=device)
    angle = positions.float()[:, None] * freqs[None]  # (t, d/2)
    return angle.cos().to(dtype), angle.sin().to(dtype)


@functools.lru_cache(maxsize=32)
def _cached_rotary_angles(pos: range, half: int, device: torch.device, dtype: torch.dtype
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """``_rotary_angles``, built once: every layer of every step rotates queries and keys at
    the same positions, and the table's ten or so small kernels cost more host time than the
    rotation (a step in eager mode issues them 2 x layers times). Made outside inference
    mode, so that a table first made for sampling can be saved for a training backward."""
    with torch.inference_mode(False), torch.no_grad():
        return _rotary_angles(pos, half, device, dtype)


# The ``mask`` of t tokens with no cache, each seeing itself and those before it: attention
# runs it as SDPA's is_causal, which CUDA's flash kernel takes (it takes no mask tensor)
CAUSAL = "causal"
Mask = torch.Tensor | str | None  # (t, S) bool, True = may attend; CAUSAL; None: all


class Attention(nn.Module):
    """Multi-head self-attention of t new tokens over S = (cached) + t keys.

    ``mask`` (t, S) bool, True = may attend, or ``CAUSAL``; ``pos`` the positions of the new
    tokens for rotary embeddings of queries and keys (None: no positions here, the stem adds
    them); ``past`` the keys and values of earlier positions (a cache), already rotated."""

    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor, mask: Mask = None,
                pos: Positions | None = None, past: KV | None = None
                ) -> tuple[torch.Tensor, KV]:
        n, t, d = x.shape
        q, (k, v) = self._project(x, pos, past)
        causal = isinstance(mask, str)
        assert not causal or (mask == CAUSAL and past is None), (mask, past is None)
        out = F.scaled_dot_product_attention(  # (N, H, t, D/H)
            q, k, v, attn_mask=None if causal else mask, is_causal=causal)
        return self.proj(out.transpose(1, 2).reshape(n, t, d)), (k, v)  # (N, t, D)

    def keys_values(self, x: torch.Tensor, pos: Positions | None = None,
                    past: KV | None = None) -> KV:
        """The keys and values ``forward`` returns, without attending."""
        return self._project(x, pos, past, queries=False)[1]

    def _project(self, x: torch.Tensor, pos: Positions | None, past: KV | None,
                 queries: bool = True) -> tuple[torch.Tensor | None, KV]:
        """Queries (N, H, t, D/H), rotated, and the keys and values (N, H, S, D/H) of x
        after ``past``."""
        n, t, d = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (N, H, t, D/H)
        if pos is not None:
            q, k = (rotary(q, pos) if queries else None), rotary(k, pos)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)  # (N, H, S, D/H)
        return (q if queries else None), (k, v)


class AdaLNLayer(nn.Module):
    """Pre-norm transformer layer whose norms are modulated by the condition c (adaLN-Zero).

    c is (N, D), one condition per sample, or (N or 1, t or 1, D), one per token (the text
    blocks condition clean and noisy tokens differently). Returns the new hidden states and
    this call's keys and values (the cache of later calls, which pass it as ``past``)."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden, heads)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        width = int(hidden * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(hidden, width), nn.GELU(approximate="tanh"), nn.Linear(width, hidden)
        )
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden))
        self.checkpointed = False  # train.checkpoint_layers (Block.checkpoint_layers)

    def forward(
        self, x: torch.Tensor, c: torch.Tensor, mask: Mask = None,
        pos: Positions | None = None, past: KV | None = None,
    ) -> tuple[torch.Tensor, KV]:
        if not (self.checkpointed and torch.is_grad_enabled()):
            return self._forward(x, c, mask, pos, past)
        # Activation checkpointing: only the inputs are kept, the layer runs again in
        # backward. Every tensor goes in and out flat, so that the keys and values (of the
        # AR clean stream, read by its noisy one) stay in the graph. The reentrant variant
        # saves the inputs with save_for_backward, where the byte meters see them; no layer
        # draws random numbers, so no RNG state is replayed.
        k, v = past if past is not None else (None, None)
        x, k, v = checkpoint(self._flat, x, c, mask, pos, k, v,
                             use_reentrant=True, preserve_rng_state=False)
        return x, (k, v)

    def _flat(self, x: torch.Tensor, c: torch.Tensor, mask: Mask,
              pos: Positions | None, k: torch.Tensor | None, v: torch.Tensor | None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, (k, v) = self._forward(x, c, mask, pos, None if k is None else (k, v))
        return x, k, v

    def keys_values(self, x: torch.Tensor, c: torch.Tensor, pos: Positions | None = None,
                    past: KV | None = None) -> KV:
        """The keys and values ``forward`` returns, and nothing else of the layer: for the last
        layer of a stream whose hidden states no one reads (the AR clean stream's)."""
        shift1, scale1, *_ = self._modulation(c)
        return self.attn.keys_values(self.norm1(x) * (1 + scale1) + shift1, pos, past)

    def _modulation(self, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """shift1, scale1, gate1, shift2, scale2, gate2 of condition c, each (., ., D)."""
        mod = self.adaLN_modulation(c)  # (N, 6D) or (N|1, t|1, 6D)
        if mod.ndim == 2:
            mod = mod[:, None]  # (N, 1, 6D)
        return mod.chunk(6, dim=-1)

    def _forward(
        self, x: torch.Tensor, c: torch.Tensor, mask: Mask,
        pos: Positions | None, past: KV | None,
    ) -> tuple[torch.Tensor, KV]:
        shift1, scale1, gate1, shift2, scale2, gate2 = self._modulation(c)
        h, kv = self.attn(self.norm1(x) * (1 + scale1) + shift1, mask, pos, past)
        x = x + gate1 * h  # (N, t, D)
        x = x + gate2 * self.mlp(self.norm2(x) * (1 + scale2) + shift2)  # (N, t, D)
        return x, kv


class AdaLNHead(nn.Module):
    """Final adaLN-modulated norm and linear projection of every token."""

    def __init__(self, hidden: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden, out_dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm(x), shift, scale))  # (N, T, out_dim)


EMBEDDING_SALT = 0x5EED_E  # separates the table's stream from seeds used for anything else


EMBEDDING_CHUNK = 1 << 20  # float64 numbers drawn at a time for the table


def frozen_unit_embedding(seed: int, num: int, dim: int) -> torch.Tensor:
    """(num, dim) rows of unit L2 norm, a pure function of the run seed (docs/method.md,
    Losses: vit): float64 normal draws, each row divided by its norm, held as float32. Drawn
    a chunk of rows at a time, a multiple of 16 rows (torch's normal fill works in runs of 16
    numbers, so the numbers are those of one ``randn(num, dim)``), so that a large vocabulary
    holds its float32 table and one chunk, not two float64 copies of it."""
    g = torch.Generator().manual_seed(seed ^ EMBEDDING_SALT)
    E = torch.empty(num, dim)
    rows = max(16, EMBEDDING_CHUNK // dim // 16 * 16)
    start = 0
    while start < num:
        stop = num if num - start < 2 * rows else start + rows  # the rest in the last one
        chunk = torch.randn(stop - start, dim, generator=g, dtype=torch.float64)
        E[start:stop] = chunk / chunk.norm(dim=1, keepdim=True)
        start = stop
    return E
