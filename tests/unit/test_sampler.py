"""Schedules, step-to-block routing and the composed Euler/Heun samplers."""

from __future__ import annotations

import pytest
import torch

from dbparallel.core.noise import LogNormalNoise
from dbparallel.core.partition import equiprobable_partition
from dbparallel.core.sampler import (
    classifier_free_guidance,
    equiprobable_schedule,
    euler_sample,
    heun_sample,
    karras_schedule,
    route,
)

NOISE = LogNormalNoise()


def test_equiprobable_schedule() -> None:
    s = equiprobable_schedule(NOISE, 4)
    assert s.dtype == torch.float64
    assert s[0].item() == 80.0 and s[-1].item() == 0.002
    assert s.tolist() == pytest.approx([80.0, 0.505, 0.1796, 0.002], rel=5e-4)
    assert bool((s[1:] < s[:-1]).all())
    assert equiprobable_schedule(NOISE, 1).tolist() == [80.0]


def test_karras_schedule() -> None:
    s = karras_schedule(NOISE, 5)
    assert s[0].item() == 80.0 and s[-1].item() == 0.002
    mid = ((80.0 ** (1 / 7) + 0.002 ** (1 / 7)) / 2) ** 7
    assert s[2].item() == pytest.approx(mid, rel=1e-12)
    assert bool((s[1:] < s[:-1]).all())


@pytest.mark.parametrize(
    ("B", "N", "table"),
    [(3, 3, [0, 1, 2]), (3, 4, [0, 0, 1, 2]), (2, 2, [0, 1]), (4, 4, [0, 1, 2, 3])],
)
def test_routing_table(B: int, N: int, table: list[int]) -> None:
    assert route(equiprobable_schedule(NOISE, N), equiprobable_partition(NOISE, B)) == table


def _recording(fn):
    calls: list[tuple[float, int]] = []

    def denoise(z: torch.Tensor, sigma: float, block: int) -> torch.Tensor:
        calls.append((sigma, block))
        return fn(z, sigma)

    return denoise, calls


def test_euler_oracle_single_point() -> None:
    y = torch.tensor([0.3, -1.7, 2.0])
    eps = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))
    part = equiprobable_partition(NOISE, 3)
    sigmas = equiprobable_schedule(NOISE, 3)
    denoise, calls = _recording(lambda z, sigma: y.expand_as(z))
    out = euler_sample(denoise, 80.0 * eps, sigmas, part)
    torch.testing.assert_close(out, y.expand_as(out), rtol=0, atol=1e-6)
    assert [b for _, b in calls] == [0, 1, 2]
    assert [s for s, _ in calls] == sigmas.tolist()


def _gaussian_oracle(mu: float, s: float):
    # data ~ N(mu, s^2): D(z, sigma) = (s^2 z + sigma^2 mu) / (s^2 + sigma^2)
    return lambda z, sigma: (s**2 * z + sigma**2 * mu) / (s**2 + sigma**2)


def _gain(sigmas: list[float], s: float, heun: bool) -> float:
    # the samplers are affine for Gaussian data: x_N - mu = gain * (x_0 - mu);
    # ODE dx/dsigma = a(sigma)(x - mu), a = sigma/(s^2 + sigma^2)
    gain = 1.0
    for sigma, nxt in zip(sigmas, sigmas[1:], strict=False):
        h, a, b = nxt - sigma, sigma / (s**2 + sigma**2), nxt / (s**2 + nxt**2)
        gain *= 1 + h / 2 * (a + b * (1 + h * a)) if heun else 1 + h * a
    return gain * s**2 / (s**2 + sigmas[-1] ** 2)  # last step to 0 returns D


@pytest.mark.parametrize(("sampler", "steps"), [(euler_sample, 50), (heun_sample, 20)])
def test_gaussian_oracle_moments(sampler, steps: int) -> None:
    mu, s = 1.0, 0.5
    part = equiprobable_partition(NOISE, 4)
    sigmas = karras_schedule(NOISE, steps)
    eps = torch.randn(4000, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    denoise, calls = _recording(_gaussian_oracle(mu, s))
    out = sampler(denoise, 80.0 * eps, sigmas, part)
    # discretisation error of the std on Karras rho=7: Euler 50 steps -5.6%, Heun 20 +4.4%
    assert out.mean().item() == pytest.approx(mu, rel=0.02)
    assert out.std().item() == pytest.approx(s, rel=0.07)
    gain = _gain(sigmas.tolist(), s, heun=sampler is heun_sample)
    torch.testing.assert_close(out, mu + gain * (80.0 * eps - mu), rtol=1e-9, atol=1e-9)
    table = route(sigmas, part)
    if sampler is euler_sample:
        assert [b for _, b in calls] == table
    else:
        expected = [b for i in range(steps - 1) for b in (table[i], table[i + 1])] + [table[-1]]
        assert [b for _, b in calls] == expected
        assert len(calls) == 2 * steps - 1


def test_convergence_order() -> None:
    mu, s = 1.0, 0.5
    part = equiprobable_partition(NOISE, 2)
    z = torch.tensor([-160.0, 160.0], dtype=torch.float64)
    exact = mu + s * (z - mu) / (s**2 + 80.0**2) ** 0.5  # x - mu ~ sqrt(s^2 + sigma^2)
    oracle = _gaussian_oracle(mu, s)

    def error(sampler, steps: int) -> float:
        out = sampler(lambda x, sigma, b: oracle(x, sigma), z, karras_schedule(NOISE, steps), part)
        return (out - exact).abs().max().item()

    # halving the step size: Euler (1st order) error / 2, Heun (2nd order) error / 4
    assert 0.4 < error(euler_sample, 80) / error(euler_sample, 40) < 0.6
    assert 0.18 < error(heun_sample, 80) / error(heun_sample, 40) < 0.32
    assert error(heun_sample, 40) < 0.2 * error(euler_sample, 40)


def test_classifier_free_guidance() -> None:
    cond, uncond = torch.tensor([1.0, 2.0]), torch.tensor([0.5, 3.0])
    assert classifier_free_guidance(cond, uncond, 2.0).tolist() == [1.5, 1.0]
    assert torch.equal(classifier_free_guidance(cond, uncond, 1.0), cond)
    assert torch.equal(classifier_free_guidance(cond, uncond, 0.0), uncond)
