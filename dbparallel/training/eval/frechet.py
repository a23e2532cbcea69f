"""Fréchet distance between two sets of feature vectors (Heusel et al. 2017)."""

from __future__ import annotations

import torch


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2) of features (N, D)."""
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    d = a.shape[1]  # torch.cov of one feature is a scalar: kept (1, 1)
    S_a, S_b = torch.cov(a.T).reshape(d, d), torch.cov(b.T).reshape(d, d)  # over N - 1
    root_a = _psd_sqrt(S_a)
    cross = torch.linalg.eigvalsh(root_a @ S_b @ root_a).clamp(min=0).sqrt().sum()
    return float((mu_a - mu_b).square().sum() + S_a.trace() + S_b.trace() - 2 * cross)


def _psd_sqrt(S: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(S)
    return vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T
