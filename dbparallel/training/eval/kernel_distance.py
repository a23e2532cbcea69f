"""Kernel Inception Distance (Binkowski et al. 2018): an unbiased MMD^2 between feature sets."""

from __future__ import annotations

import torch

SUBSETS = 100  # random subsets averaged, as in Binkowski et al. and torchmetrics
SUBSET_SIZE = 1000  # rows per subset (fewer when a set is smaller)


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """k(x, y) = (x . y / d + 1)^3 for rows of x (N, d) and y (M, d) -> (N, M)."""
    return (x @ y.T / x.shape[1] + 1) ** 3


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD^2 of two equally sized sets (m, d):
    sum_{i!=j} k(x_i, x_j)/(m(m-1)) + sum_{i!=j} k(y_i, y_j)/(m(m-1)) - 2 sum_ij k(x_i, y_j)/m^2."""
    m = len(x)
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    same = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return same - 2 * k_xy.sum() / m**2


def kernel_distance(a: torch.Tensor, b: torch.Tensor, generator: torch.Generator,
                    subsets: int = SUBSETS,
                    subset_size: int = SUBSET_SIZE) -> tuple[float, float | None]:
    """(mean, std over n, not n - 1) over random subsets of the unbiased MMD^2 between
    features a and b (N, d).
    The std is None where there is one subset: one asked for, or sets of at most
    ``subset_size`` rows, whose every subset is the whole of both (the MMD^2 of each is the
    same, and their std only rounding error)."""
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError(f"KID needs at least 2 rows per set, got {len(a)} and {len(b)}")
    a, b = a.double(), b.double()
    if m == len(a) == len(b):
        return float(mmd2_unbiased(a, b)), None
    values = torch.stack([
        mmd2_unbiased(a[torch.randperm(len(a), generator=generator)[:m]],
                      b[torch.randperm(len(b), generator=generator)[:m]])
        for _ in range(subsets)
    ])
    # the subsets' spread over all of them (population std), as Binkowski et al. and torchmetrics
    return float(values.mean()), float(values.std(correction=0)) if subsets > 1 else None
