"""Per-sample training losses; every function returns an unreduced (N,) tensor."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def weighted_mse(D: torch.Tensor, y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """weight * mean over non-batch dims of (D - y)^2."""
    err = (D - y) ** 2
    return weight * err.reshape(err.shape[0], -1).mean(dim=1)


def _token_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # (N, T, C), (N, T) -> (N, T)
    N, T, C = logits.shape
    return F.cross_entropy(logits.reshape(N * T, C), target.reshape(N * T), reduction="none").view(
        N, T
    )


def weighted_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """weight * mean cross-entropy over positions (those with mask True); 0 for empty rows."""
    if logits.ndim == 2:
        logits, target = logits.unsqueeze(1), target.unsqueeze(1)  # (N, 1, C), (N, 1)
        mask = None if mask is None else mask.unsqueeze(1)
    if mask is None:
        return weight * _token_ce(logits, target).mean(dim=1)
    mask = mask.bool()
    ce = _token_ce(logits, torch.where(mask, target, 0))  # (N, T)
    count = mask.sum(dim=1).clamp_min(1)
    return weight * (ce * mask).sum(dim=1) / count


def masked_diffusion_loss(
    logits: torch.Tensor, x0: torch.Tensor, is_masked: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """MD4 ELBO integrand: weight(t) * sum over masked i of CE(logits_i, x0_i)."""
    ce = _token_ce(logits, x0)  # (N, T)
    return weight * (ce * is_masked).sum(dim=1)
