"""train.micro_batches (a step's batch in pieces, gradients summed) and train.lr_schedule."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from probes import random_batch, recorded_gradients

from dbparallel.config import ConfigError, config_hash, load_config
from dbparallel.training.block_trainer import BlockTrainer, NonFiniteLoss
from dbparallel.training.plan import plan, plan_table, step_bytes
from dbparallel.training.step_pieces import pieces as step_pieces

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "jobs" / "tiny_cpu.yaml")
TEXT = ["data.source=shakespeare", "model.depth=2", "model.hidden=32", "model.heads=2",
        "data.seq_len=16", "sample.prompt_len=4", "sample.gen_len=8"]
TASKS = {"dit": ["task=dit", "train.label_dropout=0.5"], "vit": ["task=vit"],
         "vit-flip-crop": ["task=vit", "train.augment=flip_crop"],
         "mdm": ["task=mdm", *TEXT], "ar": ["task=ar", *TEXT],
         "looped-bptt": ["task=looped", *TEXT, "train.objective=end_to_end"]}


def _cfg(overrides: list[str], *more: str):
    blocks = "model.blocks=1" if "task=looped" in overrides else "model.blocks=2"
    return load_config([TINY], [blocks, "train.batch_size=10", "train.warmup_steps=0",
                                *overrides, *more])


def _batch(trainer: BlockTrainer, n: int = 10, seed: int = 1) -> dict[str, torch.Tensor]:
    return random_batch(trainer.task, n, seed)


@pytest.mark.parametrize("overrides", TASKS.values(), ids=TASKS.keys())
def test_pieces_reproduce_the_whole_batch_step(overrides: list[str]) -> None:
    whole = BlockTrainer(_cfg(overrides), 0)
    pieces = BlockTrainer(_cfg(overrides, "train.micro_batches=3"), 0)  # 4 + 3 + 3 rows
    cut = step_pieces(_batch(pieces), None, 3)
    assert [(len(p["image" if "image" in p else "tokens"]), s.start, s.stop)
            for p, s in cut] == [(4, 0, 4), (3, 4, 7), (3, 7, 10)]
    a_grads, b_grads = recorded_gradients(whole), recorded_gradients(pieces)
    for step in range(3):
        a = whole.train_step(_batch(whole, seed=step))
        b = pieces.train_step(_batch(pieces, seed=step))
        assert math.isclose(a.loss, b.loss, rel_tol=1e-5), (step, a.loss, b.loss)
    # the first step starts from the same weights: the same gradients, up to float sums
    assert len(a_grads[0]) == len(b_grads[0]) > 0
    for g, h in zip(a_grads[0], b_grads[0], strict=True):
        torch.testing.assert_close(g, h, rtol=1e-4, atol=1e-6)
    # and not by accident: the same weights and batch with another step's noise differ
    other = BlockTrainer(_cfg(overrides), 0)
    other.step = 1
    c_grads = recorded_gradients(other)
    other.train_step(_batch(other, seed=0))
    assert any(not torch.allclose(g, h, rtol=1e-4, atol=1e-6)
               for g, h in zip(a_grads[0], c_grads[0], strict=True))


def test_pieces_hold_the_activations_of_one_piece() -> None:
    measured = {}
    for k in (1, 4):
        trainer = BlockTrainer(_cfg(TASKS["dit"], "train.batch_size=32",
                                    f"train.micro_batches={k}"), 0)
        trainer.train_step(_batch(trainer, 32))
        assert trainer.memory is not None
        measured[k] = trainer.memory
    assert measured[4].params == measured[1].params
    assert measured[4].activations * 3 < measured[1].activations


def test_a_step_counts_the_flops_of_every_piece() -> None:
    counts = []
    for k in (1, 4):
        trainer = BlockTrainer(_cfg(TASKS["vit"], "train.batch_size=32",
                                    f"train.micro_batches={k}"), 0)
        trainer.train_step(_batch(trainer, 32))
        counts.append(trainer.model_flops_per_step)
    assert counts[0] and counts[0] == counts[1]


def test_plan_estimates_one_piece_and_a_real_step_agrees() -> None:
    cfg = _cfg(TASKS["dit"], "train.batch_size=32", "train.micro_batches=4")
    one = _cfg(TASKS["dit"], "train.batch_size=32")
    estimate = step_bytes(cfg, 0)
    assert estimate == step_bytes(cfg, 0, device="cpu")  # meta shapes = a real CPU step
    assert estimate["activations"] * 3 < step_bytes(one, 0)["activations"]
    assert estimate["flops"] == step_bytes(one, 0)["flops"]
    trainer = BlockTrainer(cfg, 0)
    trainer.train_step(_batch(trainer, 32))
    assert trainer.memory is not None and trainer.memory.activations <= estimate["activations"]
    assert "in pieces of 8 rows (train.micro_batches=4)" in plan_table(cfg, plan(cfg))


def test_a_nonfinite_piece_skips_the_whole_step() -> None:
    cfg = _cfg(TASKS["dit"], "train.micro_batches=2")
    trainer = BlockTrainer(cfg, 0)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    batch = _batch(trainer)
    batch["image"][7] = float("nan")  # a row of the second piece
    stats = trainer.train_step(batch)
    assert not stats.finite and trainer.nonfinite_steps == 1 and trainer.step == 1
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(),
                                                 strict=True))
    assert all(p.grad is None for p in trainer.model.parameters())
    cfg.train.nonfinite = "stop"
    with pytest.raises(NonFiniteLoss, match="block 0"):
        trainer.train_step(batch)


def test_micro_batches_is_checked_and_not_part_of_the_network() -> None:
    with pytest.raises(ConfigError, match="train.micro_batches: must be >= 1"):
        load_config([TINY], ["train.micro_batches=0"])
    with pytest.raises(ConfigError, match="train.micro_batches: .*must be <= "
                                          "train.batch_size=4"):
        load_config([TINY], ["train.batch_size=4", "train.micro_batches=5"])
    a, b = load_config([TINY]), load_config([TINY], ["train.micro_batches=4"])
    assert config_hash(a) == config_hash(b)  # a block may resume with other pieces


def test_cosine_schedule_warms_up_then_falls_towards_min_lr() -> None:
    cfg = load_config([TINY], ["model.blocks=2", "train.steps=110", "train.block_steps=[110,60]",
                               "train.warmup_steps=10", "train.lr=1e-3", "train.min_lr=1e-4",
                               "train.lr_schedule=cosine"])
    t0, t1 = BlockTrainer(cfg, 0), BlockTrainer(cfg, 1)
    assert [t0.lr_at(s) for s in (0, 4, 9)] == pytest.approx([1e-4, 5e-4, 1e-3])
    # 100 steps after warm-up at 1/101 .. 100/101 of the half cosine: the peak once
    assert t0.lr_at(10) < 1e-3 and t0.lr_at(10) == pytest.approx(1e-3, rel=1e-3)
    assert t0.lr_at(59) == pytest.approx(5.5e-4, rel=0.02)  # half way down
    assert 1e-4 < t0.lr_at(109) < 1.01e-4  # the last step still trains, just above min_lr
    assert 1e-4 < t1.lr_at(59) < 1.01e-4  # block 1's own count
    assert t0.lr_at(500) == pytest.approx(1e-4)  # past the end: stays at min_lr
    lrs = [t0.lr_at(s) for s in range(9, 110)]
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))  # strictly down
    # one step, no warm-up, min_lr 0: it trains at half the rate (not at 0)
    one = BlockTrainer(load_config([TINY], ["train.steps=1", "train.warmup_steps=0",
                                            "train.lr_schedule=cosine"]), 0)
    assert one.lr_at(0) == pytest.approx(5e-4)
    constant = BlockTrainer(load_config([TINY], ["train.warmup_steps=10"]), 0)
    assert [constant.lr_at(s) for s in (0, 9, 10, 10_000)] == pytest.approx(
        [1e-4, 1e-3, 1e-3, 1e-3])


def test_a_resumed_block_measures_its_memory_again() -> None:
    batch_cfg = ["task=dit", "train.batch_size=32"]
    first = BlockTrainer(_cfg(batch_cfg), 0)
    batch = _batch(first, 32)
    first.train_step(batch)
    state = first.state_dict()
    resumed = BlockTrainer(_cfg(batch_cfg, "train.micro_batches=4"), 0)
    resumed.load_state_dict(state)
    assert resumed.memory == first.memory  # what a process that trains no step reports
    resumed.train_step(batch)
    fresh = BlockTrainer(_cfg(batch_cfg, "train.micro_batches=4"), 0)
    fresh.train_step(batch)
    assert resumed.memory == fresh.memory
    assert resumed.memory is not None and first.memory is not None
    assert resumed.memory.activations * 3 < first.memory.activations


def test_lr_schedule_keys_are_checked() -> None:
    with pytest.raises(ConfigError, match="train.lr_schedule: got 'linear'; allowed: "
                                          "constant, cosine"):
        load_config([TINY], ["train.lr_schedule=linear"])
    with pytest.raises(ConfigError, match=r"train.min_lr: must be in \[0, train.lr"):
        load_config([TINY], ["train.lr=1e-3", "train.min_lr=1e-2"])
    with pytest.raises(ConfigError, match="train.warmup_steps: 60 leaves no step to decay "
                                          "with train.lr_schedule=cosine: use fewer than a "
                                          "block's 50 steps"):
        load_config([TINY], ["model.blocks=2", "train.block_steps=[100,50]",
                             "train.warmup_steps=60", "train.lr_schedule=cosine"])
    load_config([TINY], ["train.steps=50", "train.warmup_steps=60"])  # constant: no decay


@pytest.mark.parametrize("k", [1, 2])
def test_a_pieces_noise_is_freed_before_its_backward(k: int) -> None:
    """The draws are not kept through backward: when a piece's backward runs, no reference
    to any noise of the step is left (autograd saved what it needs)."""
    import weakref

    trainer = BlockTrainer(_cfg(TASKS["ar"], f"train.micro_batches={k}"), 0)
    refs: list[weakref.ref] = []
    draw = trainer.task.draw

    def recorded(*args, **kwargs):
        out = draw(*args, **kwargs)
        refs.extend(weakref.ref(v) for v in out.values())
        return out

    trainer.task.draw = recorded  # type: ignore[method-assign]
    alive: list[bool] = []
    first = next(trainer.model.parameters())
    first.register_hook(lambda grad: alive.append(any(r() is not None for r in refs)))
    assert trainer.train_step(_batch(trainer)).finite
    assert len(refs) == 2 * k and len(alive) == k  # sigma and eps of each piece's draw
    assert alive == [False] * k


@pytest.mark.parametrize("name", ["dit", "ar"])
def test_the_plan_counts_a_steps_input_rows_and_noise_draws(name: str) -> None:
    """Beside 4P and the saved activations: the EMA's copy of the weights, the step's rows on
    the device and the loss's noise draws, a piece's through its forward pass and, where the
    batch is cut, the global batch's with a piece's copy for a moment before it."""
    from dbparallel.tasks import build_task
    from dbparallel.training.data_memory import rows_nbytes as nbytes
    from dbparallel.training.seeding import generator

    whole = step_bytes(_cfg(TASKS[name]))
    cut = step_bytes(_cfg(TASKS[name], "train.micro_batches=2"))  # 2 pieces of 5 rows
    task = build_task(_cfg(TASKS[name]))
    batch = task.example_batch(10, "cpu")
    drawn = nbytes(task.draw(0, batch, 10, generator(0, "plan test")))
    assert drawn > 0 and nbytes(batch) > 0
    assert (whole["inputs"], whole["draws"], whole["draws_at_cut"]) == (nbytes(batch), drawn, 0)
    assert (cut["inputs"], cut["draws"], cut["draws_at_cut"]) == \
        (nbytes(batch), drawn // 2, drawn + drawn // 2)
    for s in (whole, cut):
        assert s["ema"] == s["params_and_optimizer"] // 4  # one more copy of the weights
        assert s["total"] == s["params_and_optimizer"] + s["ema"] + s["inputs"] + \
            max(s["activations"] + s["working"] + s["draws"], s["draws_at_cut"])
