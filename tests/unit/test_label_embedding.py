"""model.label_embedding for ViT: the frozen seed-derived table (unchanged, pinned values) and
the learned one (trained with its block, private to it)."""

from __future__ import annotations

import pytest
import torch

from dbparallel.config import ConfigError, identity_diff, load_config, to_dict
from dbparallel.tasks import build_task
from dbparallel.tasks.classification import Classification
from dbparallel.training.block_trainer import BlockTrainer

TINY = ["task=vit", "model.blocks=2", "model.depth=2", "model.hidden=16", "model.heads=2",
        "model.patch_size=4", "run.seed=3", "sample.label_start=noise"]


def _task(*extra: str) -> Classification:
    task = build_task(load_config([], [*TINY, *extra]))
    assert isinstance(task, Classification)
    return task


def _batch(n: int) -> dict[str, torch.Tensor]:
    """``n`` images in [-1, 1] of 8x8 pixels with labels 0..9, from a fixed stream."""
    g = torch.Generator().manual_seed(4)
    return {"image": torch.rand(n, 1, 8, 8, generator=g) * 2 - 1,
            "label": torch.arange(n) % 10}


def _perturbed_nets(task: Classification) -> list:
    """Both blocks with every parameter drawn from a fixed stream (a trained-looking net)."""
    nets = []
    for b in range(2):
        torch.manual_seed(100 + b)
        net = task.build_block(b)
        for p in net.parameters():
            p.data.normal_(0, 0.2)
        nets.append(net)
    return nets


def test_frozen_losses_and_predictions_are_unchanged() -> None:
    # recorded before model.label_embedding existed: the frozen table is the same computation
    task = _task()
    nets = _perturbed_nets(task)
    assert not any("label_embed" in k for net in nets for k in net.state_dict())
    g = torch.Generator().manual_seed(7)
    images = torch.rand(4, 1, 8, 8, generator=g) * 2 - 1
    batch = {"image": images, "label": torch.tensor([0, 3, 7, 9])}
    losses = [task.loss(nets[b], batch, b, torch.Generator().manual_seed(11)) for b in range(2)]
    logits = task.predict(nets, images, torch.Generator().manual_seed(5))
    # to float rounding: CPUs of other vector widths sum in other orders (1.5e-5 relative
    # measured between two machines on a loss of about 19)
    def same(got: torch.Tensor, recorded: list[float]) -> None:
        torch.testing.assert_close(got.detach(), torch.tensor(recorded), rtol=1e-4, atol=1e-5)

    same(losses[0], [36.0655403137207, 24.076778411865234, 18.705821990966797,
                     15.752243995666504])
    same(losses[1], [421.2445983886719, 48.198944091796875, 42.953914642333984,
                     93.24066162109375])
    same(logits[0, :4], [-1.5935264825820923, 1.2889230251312256, -0.38043129444122314,
                         0.9155682921409607])
    same(logits[3, :4], [-2.0516278743743896, 1.4738976955413818, -0.37124359607696533,
                         0.8148152232170105])


def test_learned_table_starts_at_the_frozen_one_and_matches_its_loss() -> None:
    frozen, learned = _task(), _task("model.label_embedding=learned")
    net = learned.build_block(0)
    torch.testing.assert_close(net.targets(), frozen.E, rtol=0, atol=1e-6)
    # the same weights give the same loss at initialisation: only where E lives differs
    net_f = frozen.build_block(0)
    net_f.load_state_dict({k: v for k, v in net.state_dict().items() if k != "label_embed"})
    batch = _batch(8)
    a = frozen.loss(net_f, batch, 0, torch.Generator().manual_seed(1))
    b = learned.loss(net, batch, 0, torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_learned_table_receives_gradients_and_stays_private() -> None:
    cfg = load_config([], [*TINY, "model.label_embedding=learned", "data.image_size=8"])
    trainers = [BlockTrainer(cfg, b) for b in range(2)]
    tables = [t.model.label_embed for t in trainers]
    assert tables[0] is not tables[1]
    assert all(any(p is t.model.label_embed for p in t.model.parameters()) for t in trainers)
    before = [t.detach().clone() for t in tables]
    task = trainers[0].task
    batch = _batch(16)
    for _ in range(3):
        trainers[0].train_step(batch)
    assert not torch.equal(tables[0].detach(), before[0])  # trained with block 0
    assert torch.equal(tables[1].detach(), before[1])  # block 1's copy untouched
    assert tables[1].grad is None
    # (at initialisation the zero output layer hides the table: the gradient is read after
    # the first steps)
    trainers[0].model.zero_grad(set_to_none=True)
    task.loss(trainers[0].model, batch, 0, torch.Generator().manual_seed(2)).mean().backward()
    grad = tables[0].grad
    assert grad is not None
    seen = batch["label"].unique()
    assert (grad[seen].norm(dim=1) > 0).all()  # every class of the batch gets a gradient
    # the snapshot that the assembly composes carries the block's own (averaged) table
    snap = trainers[0].snapshot()["ema"]["label_embed"]
    assert torch.equal(snap, trainers[0].ema.label_embed.detach())
    assert not torch.equal(snap, before[0])
    torch.testing.assert_close(trainers[0].model.targets().norm(dim=1), torch.ones(10))


def test_chain_reads_each_blocks_own_table() -> None:
    task = _task("model.label_embedding=learned")
    nets = _perturbed_nets(task)
    images = torch.zeros(3, 1, 8, 8)
    steps = task.predict_steps(nets, images, torch.Generator().manual_seed(0))
    assert [block for _, block, _ in steps] == [0, 1]
    # moving block 1's table changes nothing before block 1 runs; block 0's table moves z
    with torch.no_grad():
        nets[1].label_embed.mul_(-1)
    again = task.predict_steps(nets, images, torch.Generator().manual_seed(0))
    assert torch.equal(again[0][2], steps[0][2])
    with torch.no_grad():
        nets[0].label_embed.copy_(torch.randn(10, 16, generator=torch.Generator()
                                              .manual_seed(9)))
    moved = task.predict_steps(nets, images, torch.Generator().manual_seed(0))
    assert torch.equal(moved[0][2], again[0][2]) and not torch.equal(moved[1][2], again[1][2])


def test_config_key() -> None:
    assert load_config([], TINY).model.label_embedding == "frozen"
    with pytest.raises(ConfigError, match="model.label_embedding"):
        load_config([], [*TINY, "model.label_embedding=shared"])
    with pytest.raises(ConfigError, match="model.label_embedding: learned applies to task=vit"):
        load_config([], ["task=dit", "model.label_embedding=learned"])
    frozen, learned = load_config([], TINY), load_config([], [*TINY,
                                                             "model.label_embedding=learned"])
    assert identity_diff(to_dict(frozen), to_dict(learned)) == ["model.label_embedding"]
    old = to_dict(frozen)
    del old["model"]["label_embedding"]  # a run directory from before the key: it was frozen
    assert identity_diff(old, to_dict(frozen)) == []


def test_zero_start_follows_the_expected_embeddings() -> None:
    task = _task("sample.label_start=zero")
    nets = _perturbed_nets(task)
    seen: list[torch.Tensor] = []
    for net in nets:
        net.register_forward_hook(lambda _m, args, _out: seen.append(args[1].clone()))
    images = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    g = torch.Generator().manual_seed(0)
    steps = task.predict_steps(nets, images, g)
    assert torch.equal(seen[0], torch.zeros(5, 16))  # z = 0 at sigma_max: nothing drawn
    assert torch.equal(g.get_state(), torch.Generator().manual_seed(0).get_state())
    # after the step from 80 to 0.002: z = (1 - 0.002/80) softmax(logits_0) @ E, then c_in
    (s0, _, logits0), (s1, _, _) = steps
    z1 = (1 - s1 / s0) * (logits0.softmax(1) @ task.E)
    torch.testing.assert_close(seen[1], z1 / (s1**2 + 0.25) ** 0.5)
    # the start is an inference choice, not what the blocks are
    assert identity_diff(to_dict(load_config([], TINY)),
                         to_dict(load_config([], [*TINY, "sample.label_start=zero"]))) == []
    assert load_config([], ["task=vit"]).sample.label_start == "zero"
    with pytest.raises(ConfigError, match="sample.label_start"):
        load_config([], ["task=vit", "sample.label_start=mean"])


def test_plan_counts_a_block_with_a_learned_table() -> None:
    # the table is built on the device the block is (plan's meta device too)
    from dbparallel.training.plan import step_bytes

    cfg = load_config([], [*TINY, "model.label_embedding=learned"])
    estimate = step_bytes(cfg, 0)
    assert estimate == step_bytes(cfg, 0, device="cpu")
    plain = step_bytes(load_config([], TINY), 0)
    # the private table: its 10 x 16 parameters with gradients and Adam's moments, 4P
    assert estimate["params_and_optimizer"] - plain["params_and_optimizer"] == 4 * 10 * 16 * 4
