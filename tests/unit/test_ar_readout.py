"""The AR denoiser's readout: logits from D = c_skip z + c_out F (the paper's form) or from
the layers' output (direct), and the per-sample loss weight w(sigma) on hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from dbparallel.config import ConfigError, load_config
from dbparallel.tasks import build_task

SMALL = ["task=ar", "data.source=shakespeare", "model.depth=2", "model.hidden=32",
         "model.heads=2", "data.seq_len=16", "sample.prompt_len=4", "sample.gen_len=8",
         "train.batch_size=4"]


def _task(*extra: str):
    return build_task(load_config([], ["model.blocks=1", *SMALL, *extra]))


def _perturbed(net: torch.nn.Module) -> torch.nn.Module:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    return net


def _inputs(n: int = 4, T: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(0, 84, (n, T), generator=torch.Generator().manual_seed(0))
    return ids, torch.randn(n, T, 32, generator=torch.Generator().manual_seed(2))


def test_paper_readout_reads_the_logits_from_D() -> None:
    task = _task("model.ar_readout=paper")
    net = _perturbed(task.build_block(0))
    ids, z = _inputs(2)
    cache = net.clean(ids)[1]
    # sigma = sigma_data = 0.5: c_in = 1/sqrt(0.5), c_skip = 1/2, c_out = 0.5/sqrt(2)
    sigma = torch.full((2,), 0.5)
    logits = task.logits(net, cache, z, sigma)
    F_x, c = net.denoise(z / math.sqrt(0.5), torch.full((2,), math.log(0.5) / 4), cache, 0)
    D = 0.5 * z + 0.35355339059327373 * F_x
    torch.testing.assert_close(logits, net.head(D, c), atol=1e-5, rtol=1e-5)
    # sigma -> 0: c_skip -> 1, c_out -> 0, so D -> z whatever F is
    tiny = torch.full((2,), 1e-7)
    _, c0 = net.denoise(z / 0.5, tiny.log() / 4, cache, 0)
    torch.testing.assert_close(task.logits(net, cache, z, tiny), net.head(z, c0),
                               atol=1e-4, rtol=1e-4)
    # the final norm makes F part of the block: its parameters are checkpointed
    assert {"final_norm.weight", "final_norm.bias"} <= set(net.state_dict())


def test_direct_readout_reads_the_logits_from_the_layers() -> None:
    task = _task()  # the default
    assert task.readout == "direct"
    net = _perturbed(task.build_block(0))
    assert not hasattr(net, "final_norm")
    ids, z = _inputs(2)
    cache = net.clean(ids)[1]
    sigma = torch.full((2,), 0.5)
    h, c = net.denoise(z / math.sqrt(0.5), sigma.log() / 4, cache, 0)
    torch.testing.assert_close(task.logits(net, cache, z, sigma), net.head(h, c),
                               atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("readout", ["paper", "direct"])
def test_loss_weight_per_sample_by_hand(readout: str) -> None:
    """Constant logits (head weight 0, bias ln 3 on token 0): CE is ln(130/3) for token 0 and
    ln 130 for token 1 (V = 128), whatever the input; each sample's loss is its own
    w(sigma) = (sigma^2 + 0.25) / (0.25 sigma^2) = 4 + 1/sigma^2 times its CE."""
    task = _task(f"model.ar_readout={readout}")
    net = task.build_block(0)
    with torch.no_grad():
        net.head.linear.weight.zero_()
        net.head.linear.bias.zero_()
        net.head.linear.bias[0] = math.log(3.0)
    ids = torch.tensor([0, 1, 0, 1])[:, None].expand(4, 16)
    sigma = torch.tensor([0.002, 0.1796, 0.505, 80.0])
    eps = torch.randn(4, 16, 32, generator=torch.Generator().manual_seed(5))
    loss = task.denoising_loss(net, ids, sigma, eps)
    w = [250004.0, 35.00183034806374, 7.921184197627684, 4.00015625]
    ce = [3.7689221617874726, 4.867534450455582] * 2  # ln(130/3), ln 130
    assert loss.shape == (4,)
    assert loss.tolist() == pytest.approx([a * b for a, b in zip(w, ce, strict=True)], rel=1e-5)


def test_loss_draws_sigma_in_the_block_range_then_eps() -> None:
    task = build_task(load_config([], [*SMALL, "model.blocks=2"]))
    net = _perturbed(task.build_block(1))
    ids, _ = _inputs()
    loss = task.loss(net, {"tokens": ids}, 1, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    lo, hi = task.partition.ranges[1]
    sigma = task.noise.sample(4, lo, hi, g)
    eps = torch.randn(4, 16, 32, generator=g)
    torch.testing.assert_close(loss, task.denoising_loss(net, ids, sigma, eps))


def test_unknown_readout_names_the_key() -> None:
    with pytest.raises(ConfigError, match="model.ar_readout"):
        load_config([], [*SMALL, "model.blocks=1", "model.ar_readout=tied"])
