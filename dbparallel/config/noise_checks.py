"""Checks of the noise section that need arithmetic: noise scales that fit float32, and a
training density of ln sigma that puts enough mass in [sigma_min, sigma_max] for the
equal-mass partition (core/partition.py) to cut it into B strictly ascending ranges."""

from __future__ import annotations

import math
from typing import Protocol

from dbparallel.config.checks import check


class NoiseConfig(Protocol):
    """The keys of the noise section (config/schema.py) these checks read."""

    sigma_min: float
    sigma_max: float
    sigma_data: float
    P_mean: float
    P_std: float

# sigma, sigma_data, sigma^2, (sigma * sigma_data)^2 and their inverses all stay normal
# float32 numbers (about 1.2e-38 .. 3.4e38) when every scale is within these
SIGMA_LIMITS = (1e-9, 1e9)
MIN_P_STD = 1e-3  # narrower: the blocks' ranges in ln sigma shrink to rounding error
MIN_MASS = 1e-6  # of the training density in [sigma_min, sigma_max]: each block's share


def training_mass(P_mean: float, P_std: float, lo: float, hi: float) -> float:
    """Mass of [lo, hi] under ln sigma ~ N(P_mean, P_std^2), exact in either tail."""
    a, b = ((math.log(s) - P_mean) / P_std for s in (lo, hi))
    if a > 0:  # both in the upper tail: the difference of upper tail masses
        return 0.5 * (math.erfc(a / math.sqrt(2)) - math.erfc(b / math.sqrt(2)))
    return 0.5 * (math.erfc(-b / math.sqrt(2)) - math.erfc(-a / math.sqrt(2)))


def check_noise(noise: NoiseConfig) -> None:
    """ConfigError naming the key unless the noise scales fit float32, sigma_min < sigma_max,
    P_std >= MIN_P_STD and the training density puts at least MIN_MASS in the range."""
    low, high = SIGMA_LIMITS
    for key in ("sigma_min", "sigma_max", "sigma_data"):
        value = getattr(noise, key)
        check(low <= value <= high, f"noise.{key}",
              f"must be in [{low:g}, {high:g}] (its square and its product with the other "
              f"noise scales must fit float32), got {value}")
    check(noise.sigma_min < noise.sigma_max, "noise.sigma_min",
          f"must be < noise.sigma_max ({noise.sigma_min} >= {noise.sigma_max})")
    check(noise.P_std >= MIN_P_STD, "noise.P_std",
          f"must be >= {MIN_P_STD:g} (narrower, the blocks' ranges of ln sigma shrink to "
          f"rounding error), got {noise.P_std}")
    lo, hi = math.log(noise.sigma_min), math.log(noise.sigma_max)
    mass = training_mass(noise.P_mean, noise.P_std, noise.sigma_min, noise.sigma_max)
    key, fix = (("noise.P_std", "lower noise.P_std") if lo <= noise.P_mean <= hi else
                ("noise.P_mean", f"move noise.P_mean towards [ln sigma_min, ln sigma_max] = "
                                 f"[{lo:.3g}, {hi:.3g}]"))
    check(mass >= MIN_MASS, key,
          f"the training density of ln sigma, N({noise.P_mean}, {noise.P_std}^2), puts "
          f"{mass:.3g} of its mass in [noise.sigma_min, noise.sigma_max] = "
          f"[{noise.sigma_min:g}, {noise.sigma_max:g}]; the blocks need at least {MIN_MASS:g} "
          f"to share: {fix}")


def check_time_blocks(task: str, t_min: float, blocks: int) -> None:
    """task=mdm splits t in [t_min, 1] at b/B: ConfigError naming noise.t_min unless block
    B-1's range [t_min, 1/B] is not empty (core/partition.py, uniform_time_partition)."""
    check(task != "mdm" or blocks == 1 or 1 / blocks > t_min, "noise.t_min",
          f"{t_min} leaves the last block no masking times: task=mdm cuts t at b/B, so with "
          f"model.blocks={blocks} it must be < 1/{blocks} = {1 / blocks:.4g} (or use fewer "
          f"blocks)")
