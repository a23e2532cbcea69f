"""train.checkpoint_layers: each transformer layer's activations recomputed in backward.

The step is the same (the layers draw no random numbers): the gradients agree with a plain
step's to float rounding, for every task. Its bytes are counted as autograd holds them through
forward and backward (the peak comes in backward, when a layer is recomputed), and the plan's
meta-device count equals a real CPU step's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dbparallel.config import config_hash, load_config
from dbparallel.training.block_trainer import BlockTrainer
from dbparallel.training.plan import plan, plan_table, step_bytes

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "jobs" / "tiny_cpu.yaml")
TEXT = ["data.source=shakespeare", "model.hidden=32", "model.heads=2", "data.seq_len=16",
        "sample.prompt_len=4", "sample.gen_len=8"]
TASKS = {"dit": ["task=dit"], "vit": ["task=vit"], "vit-e2e": ["task=vit", "model.blocks=1",
                                                               "train.objective=end_to_end"],
         "mdm": ["task=mdm", *TEXT], "ar": ["task=ar", *TEXT],
         "ar-e2e": ["task=ar", *TEXT, "model.blocks=1", "train.objective=end_to_end"],
         "looped": ["task=looped", *TEXT, "model.blocks=1"]}


def _cfg(overrides: list[str], *more: str):
    return load_config([TINY], ["model.blocks=2", "model.depth=4", "train.batch_size=8",
                                "train.warmup_steps=0", *overrides, *more])


def _batch(trainer: BlockTrainer, n: int = 8) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    out = {}
    for key, x in trainer.task.example_batch(n, "cpu").items():
        out[key] = (torch.rand(x.shape, generator=g) * 2 - 1 if x.is_floating_point()
                    else torch.randint(0, 4, x.shape, generator=g).to(x.dtype))
    return out


def _first_gradients(trainer: BlockTrainer) -> list[torch.Tensor]:
    seen: list[list[torch.Tensor]] = []
    step = trainer.optimizer.step

    def record(*args, **kwargs):
        seen.append([p.grad.clone() for p in trainer.model.parameters() if p.grad is not None])
        return step(*args, **kwargs)

    trainer.optimizer.step = record  # type: ignore[method-assign]
    trainer.train_step(_batch(trainer))
    return seen[0]


@pytest.mark.parametrize("overrides", TASKS.values(), ids=TASKS.keys())
def test_checkpointed_layers_give_the_same_gradients(overrides: list[str]) -> None:
    plain = BlockTrainer(_cfg(overrides), 0)
    checkpointed = BlockTrainer(_cfg(overrides, "train.checkpoint_layers=true"), 0)
    assert all(layer.checkpointed for layer in checkpointed.model.layers)
    a, b = _first_gradients(plain), _first_gradients(checkpointed)
    assert len(a) == len(b) == sum(p.requires_grad for p in plain.model.parameters())
    for g, h in zip(a, b, strict=True):
        torch.testing.assert_close(h, g, rtol=1e-5, atol=1e-7)
    assert plain.memory is not None and checkpointed.memory is not None
    assert checkpointed.memory.activations < plain.memory.activations


def test_checkpointed_bytes_fall_and_the_plan_counts_a_real_step() -> None:
    cfg = _cfg(["task=dit"], "model.depth=8", "train.batch_size=32",
               "train.checkpoint_layers=true")
    plain = step_bytes(_cfg(["task=dit"], "model.depth=8", "train.batch_size=32"), 0)
    estimate = step_bytes(cfg, 0)
    assert estimate == step_bytes(cfg, 0, device="cpu")  # meta shapes = a real CPU step
    assert estimate["params_and_optimizer"] == plain["params_and_optimizer"]
    assert estimate["activations"] * 2 < plain["activations"]  # 4 layers: inputs kept only
    trainer = BlockTrainer(cfg, 0)
    trainer.train_step(_batch(trainer, 32))
    assert trainer.memory is not None
    assert trainer.memory.activations == estimate["activations"]
    assert "activation checkpointing of every layer (train.checkpoint_layers)" in \
        plan_table(cfg, plan(cfg))


def test_checkpointing_is_for_training_only_and_not_part_of_the_network() -> None:
    cfg = _cfg(["task=dit"], "train.checkpoint_layers=true")
    trainer = BlockTrainer(cfg, 0)
    assert not any(layer.checkpointed for layer in trainer.ema.layers)  # assembly, sampling
    assert config_hash(cfg) == config_hash(_cfg(["task=dit"]))  # resume with it changed
