"""Text tasks: masking process and ELBO, the [clean; noisy] mask, prefix reuse, frozen targets,
and the looped core's training memory against BPTT."""

from __future__ import annotations

import math

import pytest
import torch

from dbparallel.config import load_config
from dbparallel.core.losses import masked_diffusion_loss
from dbparallel.models.lm import ARBlock, ar_mask, causal_mask
from dbparallel.tasks import build_task
from dbparallel.training.block_trainer import BlockTrainer
from dbparallel.training.seeding import generator

SMALL = ["data.source=shakespeare", "model.depth=2", "model.hidden=32", "model.heads=2",
         "data.seq_len=16", "sample.prompt_len=4", "sample.gen_len=8", "train.batch_size=4"]


def _cfg(task: str, *extra: str):
    return load_config([], [f"task={task}", *SMALL, *extra])


def _tokens(n: int = 4, T: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 84, (n, T), generator=torch.Generator().manual_seed(seed))


def test_mdm_partition_block_zero_owns_the_highest_t() -> None:
    task = build_task(_cfg("mdm", "model.blocks=3", "model.depth=3", "noise.gamma=0.1"))
    p = task.partition
    assert p.boundaries == pytest.approx((1e-4, 1 / 3, 2 / 3, 1.0))
    # widened by gamma times its width on both sides, clamped to [t_min, 1]
    top = 1 / 3 + 0.1 * (1 / 3 - 1e-4)
    assert [x for r in p.ranges for x in r] == pytest.approx([19 / 30, 1, 0.3, 0.7, 1e-4, top])
    assert [p.owner(t) for t in (0.99, 2 / 3, 0.5, 0.1)] == [0, 0, 1, 2]
    # equal mass in alpha, up to the t_min cut of the lowest range
    masses = [task.noise.mass(*p.nominal_range(b)) for b in range(3)]
    assert masses == pytest.approx([1 / 3] * 3, abs=1e-4) and sum(masses) == pytest.approx(1)


def test_masking_rate_is_one_minus_alpha() -> None:
    task = build_task(_cfg("mdm", "model.blocks=2"))
    x0 = torch.zeros(4000, 16, dtype=torch.long)
    t = torch.full((4000,), 0.3)
    x_t, is_masked = task.corrupt(x0, t, torch.rand(x0.shape, generator=generator(0, "mask")))
    assert abs(float(is_masked.float().mean()) - 0.3) < 0.005
    assert bool((x_t[is_masked] == task.mask_id).all()) and bool((x_t[~is_masked] == 0).all())


def test_elbo_integrand_by_hand() -> None:
    # logits giving p(x0) = 1/2 at position 0 and 1/4 at position 1; only position 0 masked
    logits = torch.log(torch.tensor([[[0.5, 0.5, 0.0, 0.0], [0.25] * 4]]) + 1e-30)
    x0 = torch.tensor([[1, 3]])
    loss = masked_diffusion_loss(logits, x0, torch.tensor([[True, False]]), torch.tensor([4.0]))
    assert float(loss) == pytest.approx(4 * math.log(2))  # weight 1/t = 4 times CE = ln 2
    both = masked_diffusion_loss(logits, x0, torch.tensor([[True, True]]), torch.tensor([4.0]))
    assert float(both) == pytest.approx(4 * (math.log(2) + math.log(4)))


def test_elbo_of_a_uniform_model_is_log2_vocab_bits() -> None:
    # sum over k of (1/k) * k * ln V = T ln V nats: log2(V) bits per character, every draw
    task = build_task(_cfg("mdm", "model.blocks=2"))
    nets = [task.build_block(b) for b in range(2)]  # zero-initialised heads: uniform logits
    nats = task.nll(nets, _tokens(64), generator(0, "elbo"), draws=3)
    torch.testing.assert_close(nats, torch.full((64,), 16 * math.log(128), dtype=torch.float64))
    assert task.bpc(nets, _tokens(8), generator(0, "elbo"))["bpc"] == pytest.approx(7.0)


def test_elbo_estimate_agrees_with_the_time_integral() -> None:
    # a model whose CE grows with the number of masked tokens: both forms of the ELBO agree
    task = build_task(_cfg("mdm", "model.blocks=2", "data.seq_len=8",
                            "sample.prompt_len=2", "sample.gen_len=4"))

    class Fake(torch.nn.Module):
        def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            frac = (x_t == task.mask_id).float().mean(1, keepdim=True)  # (N, 1)
            return torch.zeros(*x_t.shape, 128) + 3 * frac[..., None] * torch.eye(128)[0]

    x0 = torch.zeros(2000, 8, dtype=torch.long)
    fast = float(task.nll([Fake(), Fake()], x0, generator(0, "a"), draws=4).mean())
    # the time integral with (1/t), by plain Monte Carlo over t
    g = generator(0, "b")
    t = torch.rand(20000, generator=g).clamp_min(1e-4)
    x_t, is_masked = task.corrupt(torch.zeros(20000, 8, dtype=torch.long), t,
                                  torch.rand(20000, 8, generator=g))
    slow = masked_diffusion_loss(Fake()(x_t, t), torch.zeros_like(x_t), is_masked, 1 / t)
    assert fast == pytest.approx(float(slow.mean()), rel=0.03)


def test_mdm_generation_unmasks_everything_deterministically() -> None:
    task = build_task(_cfg("mdm", "model.blocks=2", "sample.steps=5"))
    nets = [task.build_block(b) for b in range(2)]
    a = task.generate(nets, 3, generator(0, "s"))
    assert a.shape == (3, 16) and int(a.max()) < task.vocab_size
    steps = []
    assert torch.equal(a, task.generate(nets, 3, generator(0, "s"),
                                        on_step=lambda: steps.append(1)))
    assert len(steps) == 5  # one call per unmasking step (sample.steps)


@pytest.mark.parametrize("steps", [3, 6, 12])
def test_mdm_generation_runs_each_block_equally_often(steps: int) -> None:
    """sample.steps a multiple of B: the steps down from t = 1, 2/3, 1/3 (B=3, 3 steps) start
    on the blocks' boundaries; each goes to the block whose range it runs through, so every
    block takes steps / B steps, from the noisiest down."""
    task = build_task(_cfg("mdm", "model.blocks=3", "model.depth=3", f"sample.steps={steps}"))
    calls: list[int] = []

    class Counted(torch.nn.Module):
        def __init__(self, net: torch.nn.Module, block: int):
            super().__init__()
            self.net, self.block = net, block

        def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            calls.append(self.block)
            return self.net(x_t, t)

    nets = [Counted(task.build_block(b), b) for b in range(3)]
    task.generate(nets, 2, generator(0, "s"))
    assert calls == sorted(calls) and [calls.count(b) for b in range(3)] == [steps // 3] * 3
    p = task.partition  # training and the likelihood keep a boundary's noisier owner
    assert [p.owner_of_step(t) for t in (1.0, 2 / 3, 0.5, 1 / 3, 0.1)] == [0, 1, 1, 2, 2]
    assert [p.owner(t) for t in (2 / 3, 1 / 3)] == [0, 1]


def test_ar_mask_for_three_tokens() -> None:
    # rows: queries clean 0..2, noisy 0..2; columns: keys in the same order
    expected = torch.tensor([[1, 0, 0, 0, 0, 0],
                             [1, 1, 0, 0, 0, 0],
                             [1, 1, 1, 0, 0, 0],
                             [0, 0, 0, 1, 0, 0],
                             [1, 0, 0, 0, 1, 0],
                             [1, 1, 0, 0, 0, 1]], dtype=torch.bool)
    assert torch.equal(ar_mask(3), expected)
    assert torch.equal(causal_mask(2, past=3), torch.tensor([[1, 1, 1, 1, 0], [1] * 5]).bool())


def test_prefix_reuse_matches_the_full_sequence() -> None:
    task = build_task(_cfg("ar", "model.blocks=1"))
    net = task.build_block(0)
    with torch.no_grad():
        for p in net.parameters():  # away from the zero init, so every path matters
            p.add_(0.2 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    g = torch.Generator().manual_seed(2)  # fixed inputs: not whatever the global RNG holds
    ids, z, c = _tokens(3), torch.randn(3, 16, 32, generator=g), torch.randn(3, generator=g)
    full, _ = net(ids, z, c)  # F (N, T, D), every position at once
    # the same pass with the explicit (2T, 2T) mask of the [clean; noisy] sequence, one
    # condition per token: the learned constant for clean tokens, sigma's for noisy ones
    x = torch.cat([net.token_embed(ids), net.noisy_embed(z)], dim=1)
    cond = net.sigma_embed(c)
    per_token = torch.cat([net.clean_cond.expand(3, 16, -1), cond[:, None].expand(3, 16, -1)],
                          dim=1)  # (N, 2T, D)
    for layer in net.layers:
        x, _ = layer(x, per_token, ar_mask(16), torch.arange(16).repeat(2))
    torch.testing.assert_close(x[:, 16:], full, atol=1e-4, rtol=1e-4)  # direct readout: F = x
    for i in (1, 7, 15):
        _, cache = net.clean(ids[:, :i])
        one = net.denoise(z[:, i:i + 1], c, cache, start=i)[0][:, 0]  # generation: one token
        torch.testing.assert_close(one, full[:, i], atol=1e-4, rtol=1e-4)
    h, cache = net.clean(ids[:, :9])
    h2, _ = net.clean(ids[:, 9:10], cache)
    torch.testing.assert_close(h2, net.clean(ids[:, :10])[0][:, 9:], atol=1e-5, rtol=1e-5)


def test_frozen_embeddings_are_unit_and_the_same_in_every_block() -> None:
    cfg = _cfg("ar", "model.blocks=2")
    t0, t1 = BlockTrainer(cfg, 0), BlockTrainer(cfg, 1)
    E = t0.model.E
    assert E.shape == (128, 32) and torch.allclose(E.norm(dim=1), torch.ones(128))
    assert torch.equal(E, t1.model.E) and torch.equal(E, t1.ema.E)
    assert "E" not in t0.model.state_dict() and not E.requires_grad
    other = BlockTrainer(_cfg("ar", "model.blocks=2", "run.seed=1"), 0).model.E
    assert not torch.equal(E, other)


@pytest.mark.parametrize("task", ["ar", "looped"])
def test_ar_generation_and_baseline(task: str) -> None:
    blocks = "model.blocks=1" if task == "looped" else "model.blocks=2"
    for objective in ("diffusionblocks", "end_to_end"):
        extra = ["model.blocks=1"] if objective == "end_to_end" else [blocks]
        t = build_task(_cfg(task, *extra, f"train.objective={objective}", "sample.steps=3",
                            "model.loop_iterations=3"))
        nets = [t.build_block(b) for b in range(t.partition.blocks)]
        assert isinstance(nets[0], ARBlock)
        for b, net in enumerate(nets):
            assert t.loss(net, {"tokens": _tokens()}, b, generator(0, "l")).shape == (4,)
        out = t.generate(nets, _tokens()[:, :4], 8, generator(0, "g"))
        drawn: list[int] = []
        assert out.shape == (4, 8) and torch.equal(out, t.generate(
            nets, _tokens()[:, :4], 8, generator(0, "g"), on_token=lambda d=drawn: d.append(1)))
        assert len(drawn) == 8  # one call per token drawn
        assert set(t.bpc(nets, _tokens(), generator(0, "b"))) >= {"bpc"}


def _activations(objective: str, K: int, *extra: str) -> int:
    cfg = _cfg("looped", "model.blocks=1", f"model.loop_iterations={K}",
               f"train.objective={objective}", *extra)
    trainer = BlockTrainer(cfg, 0)
    trainer.train_step({"tokens": _tokens()})
    assert trainer.memory is not None
    return trainer.memory.activations


def test_looped_training_memory_is_flat_in_K_while_bptt_grows() -> None:
    db = [_activations("diffusionblocks", K) for K in (2, 4, 8)]
    bptt = [_activations("end_to_end", K) for K in (2, 4, 8)]
    # flat: the same one pass whatever K (the meter's storage dedup moves it by < 2%)
    assert db[1] == pytest.approx(db[0], rel=0.02) and db[2] == pytest.approx(db[0], rel=0.02)
    assert bptt[0] < bptt[1] < bptt[2]
    # linear: each unrolled iteration keeps one more noisy-stream pass of activations
    assert bptt[2] - bptt[1] == pytest.approx(2 * (bptt[1] - bptt[0]), rel=0.05)
    assert bptt[2] > 3 * db[2]
    truncated = _activations("end_to_end", 8, "train.bptt_truncate=2")
    assert truncated == pytest.approx(bptt[0], rel=0.05)
