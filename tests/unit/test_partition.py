"""Equi-probability partition: docs/method.md test vectors, equal mass, overlap, ownership."""

from __future__ import annotations

import json
import math

import pytest

from dbparallel.core.noise import LogNormalNoise, MaskingNoise
from dbparallel.core.partition import (
    Partition,
    equiprobable_partition,
    gaussian_partition,
    log_uniform_partition,
    uniform_time_partition,
    widen,
)

NOISE = LogNormalNoise()

VECTORS = {
    2: [0.002, 0.3012, 80.0],
    3: [0.002, 0.1796, 0.505, 80.0],
    4: [0.002, 0.1341, 0.3012, 0.6766, 80.0],
    6: [0.002, 0.0943, 0.1796, 0.3012, 0.505, 0.9617, 80.0],
}


@pytest.mark.parametrize("B", sorted(VECTORS))
def test_boundaries_match_vectors(B: int) -> None:
    part = equiprobable_partition(NOISE, B)
    assert part.blocks == B
    assert part.boundaries == pytest.approx(VECTORS[B], rel=5e-4)
    assert part.boundaries[0] == 0.002 and part.boundaries[-1] == 80.0


@pytest.mark.parametrize("B", [1, 2, 3, 4, 6, 8])
def test_each_block_holds_one_over_B(B: int) -> None:
    part = equiprobable_partition(NOISE, B)
    for b in range(B):
        assert NOISE.mass(*part.nominal_range(b)) == pytest.approx(1 / B, abs=1e-12)
    assert part.ranges == tuple(part.nominal_range(b) for b in range(B))


def test_block_zero_owns_highest_noise() -> None:
    part = equiprobable_partition(NOISE, 3)
    assert part.nominal_range(0) == (part.boundaries[2], 80.0)
    assert part.nominal_range(2) == (0.002, part.boundaries[1])


def test_overlap_vectors() -> None:
    part = equiprobable_partition(NOISE, 3, gamma=0.05)
    expected = [(0.3920, 80.0), (0.1706, 0.5318), (0.002, 0.2249)]
    for got, want in zip(part.ranges, expected, strict=True):
        assert got == pytest.approx(want, rel=5e-4)


def test_widen_log_and_linear() -> None:
    assert widen(1.0, 4.0, 0.5, 0.1, 100.0) == pytest.approx((0.5, 8.0))
    assert widen(1.0, 4.0, 0.5, 0.8, 6.0) == pytest.approx((0.8, 6.0))
    assert widen(0.25, 0.5, 0.1, 0.0, 1.0, log=False) == pytest.approx((0.225, 0.525))
    assert widen(0.75, 1.0, 0.1, 0.0, 1.0, log=False) == pytest.approx((0.725, 1.0))


def test_owner_boundaries_go_to_noisier_block() -> None:
    part = equiprobable_partition(NOISE, 3)
    lo1, hi1 = part.nominal_range(1)
    assert part.owner(80.0) == 0
    assert part.owner(1e4) == 0
    assert part.owner(hi1) == 0
    assert part.owner(hi1 * (1 + 1e-9)) == 0
    assert part.owner(hi1 * (1 - 1e-9)) == 0  # within the 1e-6 relative tolerance
    assert part.owner(hi1 * (1 - 1e-4)) == 1
    assert part.owner(lo1) == 1
    assert part.owner(lo1 * (1 - 1e-4)) == 2
    assert part.owner(0.002) == 2
    assert part.owner(1e-9) == 2
    assert equiprobable_partition(NOISE, 1).owner(0.3) == 0


def test_errors_name_the_key() -> None:
    with pytest.raises(ValueError, match="model.blocks"):
        equiprobable_partition(NOISE, 0)
    with pytest.raises(ValueError, match="noise.gamma"):
        equiprobable_partition(NOISE, 3, gamma=-0.1)
    with pytest.raises(ValueError, match="model.blocks"):
        uniform_time_partition(MaskingNoise(), 0)
    with pytest.raises(ValueError, match="noise.gamma"):
        uniform_time_partition(MaskingNoise(), 2, gamma=-1.0)


def test_uniform_time_partition() -> None:
    part = uniform_time_partition(MaskingNoise(), 4, gamma=0.1)
    assert part.boundaries == pytest.approx((1e-4, 0.25, 0.5, 0.75, 1.0))
    assert part.nominal_range(0) == (0.75, 1.0)
    assert part.ranges[0] == pytest.approx((0.725, 1.0))
    assert part.ranges[1] == pytest.approx((0.475, 0.775))
    assert part.ranges[3] == pytest.approx((1e-4, 0.25 + 0.1 * (0.25 - 1e-4)))
    assert [part.owner(t) for t in (1.0, 0.75, 0.6, 0.5, 0.1, 0.0)] == [0, 0, 1, 1, 3, 3]


def test_json_round_trip() -> None:
    part = equiprobable_partition(NOISE, 3, gamma=0.05)
    data = json.loads(json.dumps(part.to_json()))
    assert set(data) == {"boundaries", "ranges", "gamma"}
    assert data["ranges"][0] == list(part.ranges[0])
    assert Partition.from_json(data) == part


def test_malformed_partition_rejected() -> None:
    with pytest.raises(ValueError):
        Partition(boundaries=(1.0, 0.5), ranges=((0.5, 1.0),), gamma=0.0)
    with pytest.raises(ValueError):
        Partition(boundaries=(0.1, 0.5, 1.0), ranges=((0.5, 1.0),), gamma=0.0)


# Log-uniform partition (noise.partition=log_uniform): sigma_b = 0.002 * 40000^(b/B).
LOG_UNIFORM = {
    2: [0.002, 0.4, 80.0],  # 0.002 * 200
    3: [0.002, 0.06840, 2.3392, 80.0],  # 0.002 * 40000^(1/3) = 0.0684, * 40000^(2/3)
    4: [0.002, 0.028284, 0.4, 5.6569, 80.0],  # 0.002 * sqrt(200), 0.4, 0.4 * sqrt(200)
}


@pytest.mark.parametrize("B", sorted(LOG_UNIFORM))
def test_log_uniform_boundaries(B: int) -> None:
    part = log_uniform_partition(NOISE, B)
    assert part.boundaries == pytest.approx(LOG_UNIFORM[B], rel=1e-4)
    assert part.boundaries[0] == 0.002 and part.boundaries[-1] == 80.0
    b = part.boundaries
    widths = [math.log(b[i + 1] / b[i]) for i in range(B)]
    assert widths == pytest.approx([math.log(40000) / B] * B, rel=1e-12)


def test_log_uniform_overlap_and_owners() -> None:
    part = log_uniform_partition(NOISE, 3, gamma=0.05)
    # block 1 nominal [0.0684, 2.3392], log-width ln(34.2) = 3.532, widened by 0.1766 a side
    assert part.ranges[1] == pytest.approx((0.0684 * math.exp(-0.17661),
                                            2.3392 * math.exp(0.17661)), rel=1e-3)
    assert part.ranges[0][1] == 80.0 and part.ranges[2][0] == 0.002  # clamped at the ends
    # the ViT chain's B = 3 sigmas (80, 0.3012, 0.002) still run blocks 0, 1, 2 once each
    assert [part.owner(s) for s in (80.0, 0.3012, 0.002)] == [0, 1, 2]
    top = part.boundaries[2]
    assert part.owner(top) == 0 and part.owner(top * 0.999) == 1  # a boundary: noisier block
    # block 0 holds the noise levels where the label is nearly gone: less mass than 1/B
    assert NOISE.mass(*part.nominal_range(0)) == pytest.approx(0.0446, abs=2e-3)


def test_gaussian_partition_names_the_kind() -> None:
    assert gaussian_partition("equiprobable", NOISE, 3, 0.05) == \
        equiprobable_partition(NOISE, 3, 0.05)
    assert gaussian_partition("log_uniform", NOISE, 3, 0.05) == \
        log_uniform_partition(NOISE, 3, 0.05)
    with pytest.raises(ValueError, match="noise.partition"):
        gaussian_partition("uniform", NOISE, 3)
