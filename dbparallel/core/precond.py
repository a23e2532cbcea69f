"""EDM preconditioning and loss weight (Karras et al. 2022, Table 1;
docs/method.md, EDM preconditioning and loss weight)."""

from __future__ import annotations

import torch


def edm_coefficients(
    sigma: torch.Tensor, sigma_data: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(c_skip, c_out, c_in, c_noise) for each sigma."""
    c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
    c_out = sigma * sigma_data / (sigma**2 + sigma_data**2).sqrt()
    c_in = 1 / (sigma**2 + sigma_data**2).sqrt()
    c_noise = sigma.log() / 4
    return c_skip, c_out, c_in, c_noise


def edm_weight(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """Loss weight lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma * sigma_data)^2 = 1/c_out^2."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def precondition(
    F_x: torch.Tensor, z: torch.Tensor, sigma: torch.Tensor, sigma_data: float
) -> torch.Tensor:
    """D = c_skip * z + c_out * F_x, with sigma (N,) broadcast over the trailing dims of z."""
    sigma = sigma.reshape(-1, *([1] * (z.ndim - 1)))  # (N, 1, ..., 1)
    c_skip, c_out, _, _ = edm_coefficients(sigma, sigma_data)
    return c_skip.to(z.dtype) * z + c_out.to(F_x.dtype) * F_x
