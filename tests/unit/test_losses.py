"""Per-sample losses on hand-computed examples."""

from __future__ import annotations

import math

import pytest
import torch

from dbparallel.core.losses import masked_diffusion_loss, weighted_cross_entropy, weighted_mse

LN2 = math.log(2.0)


def test_weighted_mse_per_sample() -> None:
    D = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]])
    y = torch.tensor([[[0.0, 2.0], [3.0, 2.0]], [[1.0, 1.0], [1.0, 1.0]]])
    loss = weighted_mse(D, y, torch.tensor([2.0, 10.0]))
    # sample 0: mean(1, 0, 0, 4) = 1.25; sample 1: mean(1, 1, 1, 1) = 1
    assert loss.shape == (2,)
    assert loss.tolist() == pytest.approx([2.5, 10.0])


def test_weighted_mse_1d() -> None:
    D, y = torch.tensor([1.0, 3.0]), torch.tensor([0.0, 1.0])
    loss = weighted_mse(D, y, torch.tensor([1.0, 0.5]))
    assert loss.tolist() == pytest.approx([1.0, 2.0])


def test_cross_entropy_2d() -> None:
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    target = torch.tensor([1, 0])
    loss = weighted_cross_entropy(logits, target, torch.tensor([1.0, 2.0]))
    # CE = -ln softmax: ln 2 and ln(4/3)
    assert loss.tolist() == pytest.approx([LN2, 2 * math.log(4 / 3)])


def test_cross_entropy_sequence_and_mask() -> None:
    logits = torch.zeros(2, 3, 4)
    logits[0, 0, 2] = math.log(3.0)  # p(2) = 3/6
    target = torch.tensor([[2, 0, 1], [3, 3, 3]])
    weight = torch.tensor([1.0, 3.0])
    ce0 = [math.log(2.0), math.log(4.0), math.log(4.0)]
    loss = weighted_cross_entropy(logits, target, weight)
    assert loss.tolist() == pytest.approx([sum(ce0) / 3, 3 * math.log(4.0)])
    mask = torch.tensor([[True, False, True], [False, False, False]])
    target[1] = -5  # unmasked positions may hold anything
    masked = weighted_cross_entropy(logits, target, weight, mask)
    assert masked.tolist() == pytest.approx([(ce0[0] + ce0[2]) / 2, 0.0])


def test_cross_entropy_2d_mask() -> None:
    logits = torch.zeros(2, 2)
    loss = weighted_cross_entropy(logits, torch.tensor([0, 1]), torch.ones(2), torch.tensor([1, 0]))
    assert loss.tolist() == pytest.approx([LN2, 0.0])


def test_masked_diffusion_loss_sums_masked_positions() -> None:
    logits = torch.zeros(2, 4, 8)  # CE = ln 8 everywhere
    logits[0, 1, 5] = 100.0  # position predicted perfectly: CE ~ 0
    x0 = torch.full((2, 4), 5)
    is_masked = torch.tensor([[True, True, False, True], [False, False, False, False]])
    weight = torch.tensor([1 / 0.25, 1 / 0.5])
    loss = masked_diffusion_loss(logits, x0, is_masked, weight)
    assert loss.shape == (2,)
    assert loss.tolist() == pytest.approx([4 * 2 * math.log(8.0), 0.0], abs=1e-6)


def test_gradient_flows_per_sample() -> None:
    D = torch.zeros(3, 2, requires_grad=True)
    weighted_mse(D, torch.ones(3, 2), torch.tensor([1.0, 0.0, 2.0])).sum().backward()
    # d/dD w * mean((D - y)^2) = w * 2 (D - y) / 2
    assert D.grad.tolist() == [[-1.0, -1.0], [0.0, 0.0], [-2.0, -2.0]]
