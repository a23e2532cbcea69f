"""Partitions of the noise levels into B block ranges (docs/method.md, Equi-probability
partition): equal mass of the training density (the paper's), or equal widths in ln sigma (the
paper's "uniform" ablation, App. E.6)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dbparallel.core.noise import LogNormalNoise, MaskingNoise

_BOUNDARY_RTOL = 1e-6


@dataclass(frozen=True)
class Partition:
    """Noise ranges of the B blocks; block 0 (first layers) owns the highest noise."""

    boundaries: tuple[float, ...]  # B+1 values, ascending (sigma or t)
    ranges: tuple[tuple[float, float], ...]  # per block, block 0 first, widened by gamma
    gamma: float  # overlap, in units of each range's (log-)width

    def __post_init__(self) -> None:
        b = self.boundaries
        if len(b) < 2 or any(lo >= hi for lo, hi in zip(b, b[1:], strict=False)):
            raise ValueError(f"partition.boundaries must be >= 2 ascending values, got {b}")
        if len(self.ranges) != len(b) - 1:
            raise ValueError(
                f"partition.ranges must hold {len(b) - 1} ranges, got {len(self.ranges)}"
            )

    @property
    def blocks(self) -> int:
        """Number of blocks B."""
        return len(self.boundaries) - 1

    def nominal_range(self, block: int) -> tuple[float, float]:
        """Range of `block` without overlap: [boundaries[B-1-b], boundaries[B-b]]."""
        B = self.blocks
        if not 0 <= block < B:
            raise ValueError(f"block must be in [0, {B - 1}], got {block}")
        return self.boundaries[B - 1 - block], self.boundaries[B - block]

    def owner(self, sigma: float) -> int:
        """Block whose nominal range holds sigma; a shared boundary goes to the noisier block."""
        return self._owner(sigma, noisier=True)

    def owner_of_step(self, sigma: float) -> int:
        """Block of a denoising step that starts at sigma and goes down: sigma's block, and
        where sigma is a shared boundary, the less noisy one, whose nominal range the step then
        runs through (both were trained at sigma). Steps that start at multiples of 1/B of a
        uniform range (masked diffusion's t) so go to each block equally often."""
        return self._owner(sigma, noisier=False)

    def _owner(self, sigma: float, noisier: bool) -> int:
        """Block whose nominal range holds sigma; a boundary (within a relative
        _BOUNDARY_RTOL) goes to the ``noisier`` of its two blocks, or the less noisy one."""
        B = self.blocks
        for block in range(B - 1):
            lo = self.boundaries[B - 1 - block]
            tol = _BOUNDARY_RTOL * abs(lo)
            if (sigma >= lo - tol) if noisier else (sigma > lo + tol):
                return block
        return B - 1

    def to_json(self) -> dict:
        """Plain-JSON form: {"boundaries": [...], "ranges": [[lo, hi], ...], "gamma": g}."""
        return {
            "boundaries": list(self.boundaries),
            "ranges": [list(r) for r in self.ranges],
            "gamma": self.gamma,
        }

    @staticmethod
    def agree(a: object, b: object, rel: float = 1e-9) -> bool:
        """Whether two ``to_json`` forms are the same partition, their numbers equal to a
        relative ``rel``: the boundaries come from erf/log arithmetic whose last digits differ
        between machines (vector instruction sets) and library versions."""
        if isinstance(a, dict) and isinstance(b, dict):
            return a.keys() == b.keys() and all(Partition.agree(a[k], b[k], rel) for k in a)
        if isinstance(a, list) and isinstance(b, list):
            return len(a) == len(b) and all(
                Partition.agree(x, y, rel) for x, y in zip(a, b, strict=True))
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) \
                and not isinstance(a, bool) and not isinstance(b, bool):
            return math.isclose(a, b, rel_tol=rel, abs_tol=1e-300)
        return a == b

    @classmethod
    def from_json(cls, data: dict) -> Partition:
        """Inverse of to_json."""
        return cls(
            boundaries=tuple(float(x) for x in data["boundaries"]),
            ranges=tuple((float(lo), float(hi)) for lo, hi in data["ranges"]),
            gamma=float(data["gamma"]),
        )


def widen(
    lo: float, hi: float, gamma: float, floor: float, ceil: float, log: bool = True
) -> tuple[float, float]:
    """[lo, hi] extended on each side by gamma times its (log-)width, clamped to [floor, ceil]."""
    if log:
        # ln lo' = ln lo - gamma * ln(hi/lo), ln hi' = ln hi + gamma * ln(hi/lo)
        pad = gamma * math.log(hi / lo)
        lo, hi = lo * math.exp(-pad), hi * math.exp(pad)
    else:
        pad = gamma * (hi - lo)
        lo, hi = lo - pad, hi + pad
    return max(lo, floor), min(hi, ceil)


def _check(blocks: int, gamma: float) -> None:
    if blocks < 1:
        raise ValueError(f"model.blocks must be >= 1, got {blocks}")
    if not gamma >= 0:
        raise ValueError(f"noise.gamma must be >= 0, got {gamma}")


def _build(boundaries: list[float], gamma: float, log: bool) -> Partition:
    B = len(boundaries) - 1
    floor, ceil = boundaries[0], boundaries[-1]
    ranges = tuple(
        widen(boundaries[B - 1 - b], boundaries[B - b], gamma, floor, ceil, log) for b in range(B)
    )
    return Partition(boundaries=tuple(boundaries), ranges=ranges, gamma=gamma)


def equiprobable_partition(noise: LogNormalNoise, blocks: int, gamma: float = 0.0) -> Partition:
    """Boundaries with equal truncated log-normal mass 1/B per block, log-widened by gamma."""
    _check(blocks, gamma)
    q = noise.cdf(torch.tensor([noise.sigma_min, noise.sigma_max], dtype=torch.float64))
    # q_b = q(sigma_min) + (b/B)(q(sigma_max) - q(sigma_min)), sigma_b = q^-1(q_b)
    b = torch.arange(blocks + 1, dtype=torch.float64)
    sigma = noise.icdf(q[0] + (b / blocks) * (q[1] - q[0])).tolist()
    sigma[0], sigma[-1] = noise.sigma_min, noise.sigma_max
    return _build(sigma, gamma, log=True)


def log_uniform_partition(noise: LogNormalNoise, blocks: int, gamma: float = 0.0) -> Partition:
    """Boundaries equally spaced in ln sigma, log-widened by gamma:
    sigma_b = sigma_min (sigma_max / sigma_min)^(b/B)."""
    _check(blocks, gamma)
    lo, hi = math.log(noise.sigma_min), math.log(noise.sigma_max)
    sigma = [math.exp(lo + (b / blocks) * (hi - lo)) for b in range(blocks + 1)]
    sigma[0], sigma[-1] = noise.sigma_min, noise.sigma_max
    return _build(sigma, gamma, log=True)


def gaussian_partition(kind: str, noise: LogNormalNoise, blocks: int,
                       gamma: float = 0.0) -> Partition:
    """The partition named by ``noise.partition`` (equiprobable | log_uniform)."""
    if kind == "equiprobable":
        return equiprobable_partition(noise, blocks, gamma)
    if kind == "log_uniform":
        return log_uniform_partition(noise, blocks, gamma)
    raise ValueError(f"noise.partition: got {kind!r}; allowed: equiprobable, log_uniform")


def uniform_time_partition(noise: MaskingNoise, blocks: int, gamma: float = 0.0) -> Partition:
    """Boundaries t_b = b/B (equal mass in alpha, t_0 = t_min), linearly widened by gamma."""
    _check(blocks, gamma)
    t = [b / blocks for b in range(blocks + 1)]
    t[0] = noise.t_min
    if blocks > 1 and t[1] <= noise.t_min:
        raise ValueError(f"model.blocks={blocks} leaves a first range below noise.t_min")
    return _build(t, gamma, log=False)
