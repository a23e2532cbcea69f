"""Training noise distributions: EDM log-normal sigma (continuous) and MD4 masking time t."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch


def _f64(x: torch.Tensor | float) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


def _check_range(name: str, lo: float, hi: float) -> None:
    if not lo < hi:
        raise ValueError(f"{name}: empty noise range [{lo}, {hi}] after clamping to the support")


@dataclass(frozen=True)
class LogNormalNoise:
    """EDM training noise: ln sigma ~ N(P_mean, P_std^2), truncated to [sigma_min, sigma_max]."""

    P_mean: float = -1.2  # mean of ln sigma
    P_std: float = 1.2  # std of ln sigma
    sigma_min: float = 0.002  # lower end of the support
    sigma_max: float = 80.0  # upper end of the support

    def __post_init__(self) -> None:
        if not self.P_std > 0:
            raise ValueError(f"noise.P_std must be > 0, got {self.P_std}")
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(
                f"noise.sigma_min, noise.sigma_max must satisfy 0 < sigma_min < sigma_max, "
                f"got {self.sigma_min}, {self.sigma_max}"
            )

    def cdf(self, sigma: torch.Tensor | float) -> torch.Tensor:
        """Untruncated q(sigma) = Phi((ln sigma - P_mean) / P_std), float64."""
        return torch.special.ndtr((_f64(sigma).log() - self.P_mean) / self.P_std)

    def icdf(self, q: torch.Tensor | float) -> torch.Tensor:
        """Untruncated inverse: sigma = exp(P_mean + P_std * Phi^-1(q)), float64."""
        return (self.P_mean + self.P_std * torch.special.ndtri(_f64(q))).exp()

    def _normaliser(self) -> float:
        # Z = q(sigma_max) - q(sigma_min)
        q = self.cdf(torch.tensor([self.sigma_min, self.sigma_max], dtype=torch.float64))
        return float(q[1] - q[0])

    def pdf(self, sigma: torch.Tensor | float) -> torch.Tensor:
        """Density over sigma of the truncated distribution; 0 outside [sigma_min, sigma_max]."""
        sigma = _f64(sigma)
        x = (sigma.log() - self.P_mean) / self.P_std
        # p(sigma) = phi(x) / (P_std * sigma * Z)
        p = torch.exp(-0.5 * x**2) / (math.sqrt(2 * math.pi) * self.P_std * sigma)
        inside = (sigma >= self.sigma_min) & (sigma <= self.sigma_max)
        return torch.where(inside, p / self._normaliser(), torch.zeros_like(p))

    def clamp(self, lo: float, hi: float) -> tuple[float, float]:
        """[lo, hi] intersected with [sigma_min, sigma_max]."""
        return max(lo, self.sigma_min), min(hi, self.sigma_max)

    def mass(self, lo: float, hi: float) -> float:
        """Truncated probability mass of [lo, hi] (clamped to the support)."""
        lo, hi = self.clamp(lo, hi)
        if lo >= hi:
            return 0.0
        q = self.cdf(torch.tensor([lo, hi], dtype=torch.float64))
        return float(q[1] - q[0]) / self._normaliser()

    def sample(
        self,
        n: int,
        lo: float,
        hi: float,
        generator: torch.Generator,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """n draws of sigma by inverse CDF, restricted to [lo, hi] within the support, made on
        the generator's device and returned on ``device``."""
        lo, hi = self.clamp(lo, hi)
        _check_range("LogNormalNoise.sample", lo, hi)
        # numbers, not a tensor to copy: a CUDA generator's draw makes no host-to-device copy
        q_lo, q_hi = _cdf_pair(self, lo, hi)
        # u ~ U(q(lo), q(hi)), sigma = q^-1(u)
        u = q_lo + (q_hi - q_lo) * torch.rand(n, generator=generator, dtype=torch.float64,
                                              device=generator.device)
        sigma = self.icdf(u).clamp(lo, hi)
        return sigma.to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=256)
def _cdf_pair(noise: LogNormalNoise, lo: float, hi: float) -> tuple[float, float]:
    """``noise.cdf`` of ``lo`` and ``hi`` as numbers, computed once per range: a block draws
    from one range every step, and the few small host tensor operations cost more than the
    draw itself on a GPU step's critical path (after its wait for the device)."""
    q_lo, q_hi = noise.cdf(torch.tensor([lo, hi], dtype=torch.float64)).tolist()
    return q_lo, q_hi


@dataclass(frozen=True)
class MaskingNoise:
    """MD4 masking process with the linear schedule alpha(t) = 1 - t, t in [t_min, 1]."""

    t_min: float = 1e-4  # avoids the 1/t singularity of the ELBO weight

    def __post_init__(self) -> None:
        if not 0 < self.t_min < 1:
            raise ValueError(f"noise.t_min must be in (0, 1), got {self.t_min}")

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """Probability a token is kept: alpha(t) = 1 - t."""
        return 1 - t

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        """ELBO weight -alpha'(t) / (1 - alpha(t)) = 1/t."""
        return 1 / t

    def clamp(self, lo: float, hi: float) -> tuple[float, float]:
        """[lo, hi] intersected with [t_min, 1]."""
        return max(lo, self.t_min), min(hi, 1.0)

    def mass(self, lo: float, hi: float) -> float:
        """(alpha(lo) - alpha(hi)) / (alpha(t_min) - alpha(1)), clamped to the support."""
        lo, hi = self.clamp(lo, hi)
        if lo >= hi:
            return 0.0
        return (hi - lo) / (1.0 - self.t_min)

    def sample(
        self,
        n: int,
        lo: float,
        hi: float,
        generator: torch.Generator,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """n draws of t uniform in alpha on [max(lo, t_min), min(hi, 1)], made on the
        generator's device and returned on ``device``."""
        lo, hi = self.clamp(lo, hi)
        _check_range("MaskingNoise.sample", lo, hi)
        # alpha linear in t: uniform in alpha == uniform in t
        u = torch.rand(n, generator=generator, dtype=torch.float64, device=generator.device)
        t = (lo + (hi - lo) * u).clamp(lo, hi)
        return t.to(device=device, dtype=dtype)
