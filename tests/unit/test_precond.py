"""EDM preconditioning identities and loss weight values."""

from __future__ import annotations

import pytest
import torch

from dbparallel.core.precond import edm_coefficients, edm_weight, precondition

SIGMA_DATA = 0.5
SIGMA = torch.logspace(-3, 2, 50, dtype=torch.float64)


def test_identities() -> None:
    c_skip, c_out, c_in, c_noise = edm_coefficients(SIGMA, SIGMA_DATA)
    one = torch.ones_like(SIGMA)
    torch.testing.assert_close(c_in**2 * (SIGMA**2 + SIGMA_DATA**2), one)
    torch.testing.assert_close(c_skip, SIGMA_DATA**2 * c_in**2)
    torch.testing.assert_close(c_out, SIGMA * SIGMA_DATA * c_in)
    torch.testing.assert_close(c_noise, SIGMA.log() / 4)
    # unit-variance F target: (sigma_data^2 (1 - c_skip)^2 + c_skip^2 sigma^2) / c_out^2 = 1
    var = (SIGMA_DATA**2 * (1 - c_skip) ** 2 + c_skip**2 * SIGMA**2) / c_out**2
    torch.testing.assert_close(var, one)
    torch.testing.assert_close(edm_weight(SIGMA, SIGMA_DATA), 1 / c_out**2)


def test_limits() -> None:
    c_skip, c_out, _, _ = edm_coefficients(torch.tensor([1e-8, 1e8], dtype=torch.float64), 0.5)
    assert c_skip[0].item() == pytest.approx(1.0, abs=1e-12)
    assert c_out[0].item() == pytest.approx(0.0, abs=1e-8)
    assert c_skip[1].item() == pytest.approx(0.0, abs=1e-12)
    assert c_out[1].item() == pytest.approx(SIGMA_DATA, rel=1e-12)


def test_weight_values() -> None:
    w = edm_weight(torch.tensor([0.1796, 0.505, 80.0], dtype=torch.float64), SIGMA_DATA)
    assert w.tolist() == pytest.approx([35.0, 7.92, 4.0], rel=2e-3)


def test_precondition_broadcast_and_limit() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 2, 4, generator=g)
    F_x = torch.randn(3, 2, 4, generator=g)
    sigma = torch.tensor([1e-6, 0.5, 80.0])
    D = precondition(F_x, z, sigma, SIGMA_DATA)
    assert D.shape == z.shape and D.dtype == torch.float32
    torch.testing.assert_close(D[0], z[0], rtol=0, atol=1e-5)  # D -> z as sigma -> 0
    # sigma = sigma_data: c_skip = 1/2, c_out = sigma_data / sqrt(2)
    torch.testing.assert_close(D[1], 0.5 * z[1] + 0.5 / 2**0.5 * F_x[1])
    c_skip, c_out, _, _ = edm_coefficients(torch.tensor(80.0), SIGMA_DATA)
    torch.testing.assert_close(D[2], c_skip * z[2] + c_out * F_x[2])
