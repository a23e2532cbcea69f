"""Composed sampling: each ODE step runs only the block owning its sigma (docs/method.md,
Samplers and routing)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from dbparallel.core.noise import LogNormalNoise
from dbparallel.core.partition import Partition, equiprobable_partition

Denoiser = Callable[[torch.Tensor, float, int], torch.Tensor]  # (z, sigma, block) -> D(z, sigma)


def _check_steps(steps: int) -> None:
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")


def equiprobable_schedule(noise: LogNormalNoise, steps: int) -> torch.Tensor:
    """Descending float64 sigmas at equal steps of q(sigma), from sigma_max to sigma_min."""
    _check_steps(steps)
    if steps == 1:
        return torch.tensor([noise.sigma_max], dtype=torch.float64)
    # the boundaries of the (steps - 1)-block partition: q^-1(linspace(q(sigma_min), q(sigma_max)))
    boundaries = equiprobable_partition(noise, steps - 1).boundaries
    return torch.tensor(boundaries[::-1], dtype=torch.float64)


def karras_schedule(noise: LogNormalNoise, steps: int, rho: float = 7.0) -> torch.Tensor:
    """Descending float64 sigmas of Karras et al. 2022, Eq. 5."""
    _check_steps(steps)
    if steps == 1:
        return torch.tensor([noise.sigma_max], dtype=torch.float64)
    i = torch.arange(steps, dtype=torch.float64)
    hi, lo = noise.sigma_max ** (1 / rho), noise.sigma_min ** (1 / rho)
    # sigma_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho
    sigmas = (hi + i / (steps - 1) * (lo - hi)) ** rho
    sigmas[0], sigmas[-1] = noise.sigma_max, noise.sigma_min
    return sigmas


def route(sigmas: torch.Tensor, partition: Partition) -> list[int]:
    """The block that owns each sigma of a schedule."""
    return [partition.owner(float(s)) for s in sigmas]


def euler_sample(
    denoise: Denoiser, z: torch.Tensor, sigmas: torch.Tensor, partition: Partition
) -> torch.Tensor:
    """Euler on the probability-flow ODE from z = sigma_0 * eps, with sigma_N = 0."""
    steps = [float(s) for s in sigmas] + [0.0]
    for sigma, sigma_next in zip(steps, steps[1:], strict=False):
        D = denoise(z, sigma, partition.owner(sigma))
        # z' = z + (sigma' - sigma) (z - D)/sigma; at sigma' = 0 this is D
        z = D if sigma_next == 0 else z + (sigma_next - sigma) * (z - D) / sigma
    return z


def heun_sample(
    denoise: Denoiser, z: torch.Tensor, sigmas: torch.Tensor, partition: Partition
) -> torch.Tensor:
    """Heun's 2nd-order method (Karras et al. 2022, Algorithm 1), 2N - 1 denoiser calls."""
    steps = [float(s) for s in sigmas] + [0.0]
    for sigma, sigma_next in zip(steps, steps[1:], strict=False):
        # Euler step: d = (z - D)/sigma
        D = denoise(z, sigma, partition.owner(sigma))
        if sigma_next == 0:
            z = D
            break
        d = (z - D) / sigma
        z_next = z + (sigma_next - sigma) * d
        # 2nd-order correction: z' = z + (sigma' - sigma)(d + d')/2
        D_next = denoise(z_next, sigma_next, partition.owner(sigma_next))
        d_next = (z_next - D_next) / sigma_next
        z = z + (sigma_next - sigma) * 0.5 * (d + d_next)
    return z


def classifier_free_guidance(
    D_cond: torch.Tensor, D_uncond: torch.Tensor, scale: float
) -> torch.Tensor:
    """Guided denoiser D_uncond + scale * (D_cond - D_uncond)."""
    return D_uncond + scale * (D_cond - D_uncond)
