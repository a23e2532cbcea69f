"""LogNormalNoise and MaskingNoise: cdf round trips, truncated density, mass, draws in range."""

from __future__ import annotations

import math

import pytest
import torch

from dbparallel.core.noise import LogNormalNoise, MaskingNoise
from dbparallel.core.partition import equiprobable_partition

NOISE = LogNormalNoise()


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_cdf_known_values() -> None:
    # q(exp(P_mean)) = 1/2; q(exp(P_mean + P_std)) = Phi(1)
    assert NOISE.cdf(math.exp(-1.2)).item() == pytest.approx(0.5, abs=1e-15)
    assert NOISE.cdf(math.exp(0.0)).item() == pytest.approx(0.5 * (1 + math.erf(1 / 2**0.5)))
    assert NOISE.cdf(1.0).dtype == torch.float64


def test_cdf_icdf_round_trip() -> None:
    sigma = torch.logspace(math.log10(0.002), math.log10(80.0), 200, dtype=torch.float64)
    torch.testing.assert_close(NOISE.icdf(NOISE.cdf(sigma)), sigma, rtol=1e-10, atol=0)
    q = torch.linspace(1e-4, 1 - 1e-4, 101, dtype=torch.float64)
    torch.testing.assert_close(NOISE.cdf(NOISE.icdf(q)), q, rtol=1e-12, atol=1e-14)


def test_pdf_integrates_to_one_and_vanishes_outside() -> None:
    # integral p(sigma) dsigma = integral p(e^u) e^u du, trapezoid in u = ln sigma
    u = torch.linspace(math.log(0.002), math.log(80.0), 20001, dtype=torch.float64)
    assert torch.trapezoid(NOISE.pdf(u.exp()) * u.exp(), u).item() == pytest.approx(1.0, abs=1e-6)
    assert NOISE.pdf(torch.tensor([0.001, 81.0])).tolist() == [0.0, 0.0]
    assert NOISE.pdf(0.3).item() > 0


def test_mass_total_and_clamped() -> None:
    assert NOISE.mass(0.002, 80.0) == pytest.approx(1.0, abs=1e-12)
    assert NOISE.mass(1e-6, 1e6) == pytest.approx(1.0, abs=1e-12)
    assert NOISE.mass(math.exp(-1.2), 80.0) == pytest.approx(0.5, abs=1e-4)
    assert NOISE.mass(100.0, 200.0) == 0.0


def test_sample_stays_in_range() -> None:
    sigma = NOISE.sample(50_000, 0.1796, 0.505, _gen(), dtype=torch.float64)
    assert sigma.dtype == torch.float64 and sigma.shape == (50_000,)
    assert sigma.min().item() >= 0.1796 and sigma.max().item() <= 0.505
    clipped = NOISE.sample(10_000, 1e-5, 1e5, _gen(), dtype=torch.float64)
    assert clipped.min().item() >= 0.002 and clipped.max().item() <= 80.0


def test_full_range_draws_split_equally_across_blocks() -> None:
    B = 4
    part = equiprobable_partition(NOISE, B)
    sigma = NOISE.sample(200_000, 0.002, 80.0, _gen(1), dtype=torch.float64)
    for b in range(B):
        lo, hi = part.nominal_range(b)
        frac = ((sigma >= lo) & (sigma < hi)).double().mean().item()
        assert frac == pytest.approx(1 / B, abs=0.01)


def test_sub_range_sample_matches_renormalised_cdf() -> None:
    lo, hi, n = 0.1, 1.0, 20_000
    sigma = NOISE.sample(n, lo, hi, _gen(2), dtype=torch.float64).sort().values
    q_lo, q_hi = NOISE.cdf(lo), NOISE.cdf(hi)
    model = (NOISE.cdf(sigma) - q_lo) / (q_hi - q_lo)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    ks = torch.maximum(i / n - model, model - (i - 1) / n).max().item()
    assert ks < 1.36 / math.sqrt(n)  # 5% critical value


def test_sample_seeded_and_cast() -> None:
    a = NOISE.sample(1000, 0.01, 10.0, _gen(7))
    b = NOISE.sample(1000, 0.01, 10.0, _gen(7))
    c = NOISE.sample(1000, 0.01, 10.0, _gen(8))
    assert a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_sample_computes_its_range_cdf_once(monkeypatch) -> None:
    # a block samples one range every step: its CDF pair is host work on the step's path
    noise = LogNormalNoise(P_mean=-1.1)  # a noise no other test caches
    expected = noise.sample(64, 0.03, 3.0, _gen(5))
    calls = []
    cdf = LogNormalNoise.cdf
    monkeypatch.setattr(LogNormalNoise, "cdf",
                        lambda self, sigma: calls.append(sigma) or cdf(self, sigma))
    for _ in range(3):
        assert torch.equal(noise.sample(64, 0.03, 3.0, _gen(5)), expected)
    assert calls == []
    noise.sample(64, 0.03, 2.0, _gen(5))  # another range: computed once
    noise.sample(64, 0.03, 2.0, _gen(5))
    assert len(calls) == 1


def test_sample_empty_range_raises() -> None:
    with pytest.raises(ValueError):
        NOISE.sample(10, 100.0, 200.0, _gen())
    with pytest.raises(ValueError):
        NOISE.sample(10, 0.5, 0.5, _gen())


def test_invalid_parameters_name_key() -> None:
    with pytest.raises(ValueError, match="noise.P_std"):
        LogNormalNoise(P_std=0.0)
    with pytest.raises(ValueError, match="noise.sigma_min"):
        LogNormalNoise(sigma_min=1.0, sigma_max=0.5)


def test_masking_schedule_and_weight() -> None:
    m = MaskingNoise()
    t = torch.tensor([0.25, 0.5, 1.0])
    assert m.alpha(t).tolist() == [0.75, 0.5, 0.0]
    assert m.weight(t).tolist() == [4.0, 2.0, 1.0]


def test_masking_mass() -> None:
    m = MaskingNoise(t_min=0.1)
    assert m.mass(0.0, 1.0) == pytest.approx(1.0)
    assert m.mass(0.55, 1.0) == pytest.approx(0.5)
    assert m.mass(0.0, 0.2) == pytest.approx(0.1 / 0.9)


def test_masking_sample_uniform_in_range() -> None:
    m = MaskingNoise()
    t = m.sample(100_000, 0.0, 0.5, _gen(3), dtype=torch.float64)
    assert t.min().item() >= 1e-4 and t.max().item() <= 0.5
    assert t.mean().item() == pytest.approx((1e-4 + 0.5) / 2, abs=3e-3)
    assert ((t < 0.25).double().mean().item()) == pytest.approx(0.5, abs=0.01)
    assert torch.equal(m.sample(10, 0.2, 0.4, _gen(4)), m.sample(10, 0.2, 0.4, _gen(4)))
    with pytest.raises(ValueError):
        m.sample(10, 0.5, 0.5, _gen())
