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
from probes import random_batch, recorded_gradients

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
    return random_batch(trainer.task, n, seed=3)


def _first_gradients(trainer: BlockTrainer) -> list[torch.Tensor]:
    seen = recorded_gradients(trainer)
    trainer.train_step(_batch(trainer))
    return seen[0]


def _perturb(trainer: BlockTrainer) -> None:
    """Weights off their start, where adaLN-Zero's gates are 0 and leave most gradients 0."""
    g = torch.Generator().manual_seed(8)
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("overrides", TASKS.values(), ids=TASKS.keys())
def test_checkpointed_layers_give_the_same_gradients(overrides: list[str]) -> None:
    plain = BlockTrainer(_cfg(overrides), 0)
    checkpointed = BlockTrainer(_cfg(overrides, "train.checkpoint_layers=true"), 0)
    assert all(layer.checkpointed for layer in checkpointed.model.layers)
    _perturb(plain), _perturb(checkpointed)
    a, b = _first_gradients(plain), _first_gradients(checkpointed)
    assert len(a) == len(b) == sum(p.requires_grad for p in plain.model.parameters())
    names = [n for n, p in plain.model.named_parameters() if p.requires_grad]
    # the layer's attention and MLP have gradients here (a wrong recompute would change them)
    assert all(g.abs().sum() > 0 for n, g in zip(names, a, strict=True)
               if n.startswith(("layers.0.attn.", "layers.0.mlp.")))
    for n, g, h in zip(names, a, b, strict=True):
        torch.testing.assert_close(h, g, rtol=1e-5, atol=1e-7, msg=lambda m, n=n: f"{n}: {m}")
    assert plain.memory is not None and checkpointed.memory is not None
    assert checkpointed.memory.activations < plain.memory.activations


def test_checkpointed_bytes_fall_and_the_plan_counts_a_real_step() -> None:
    cfg = _cfg(["task=dit"], "model.depth=8", "train.batch_size=32",
               "train.checkpoint_layers=true")
    plain = step_bytes(_cfg(["task=dit"], "model.depth=8", "train.batch_size=32"), 0)
    # the bytes alone (the plan's fit of model.blocks=auto): the same count, FLOPs left out
    assert step_bytes(cfg, 0, count_flops=False) == {
        k: v for k, v in step_bytes(cfg, 0).items() if k not in ("flops", "work_flops")}
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


@pytest.mark.parametrize("task", ["dit", "vit", "ar", "ar-e2e"])
def test_checkpointing_costs_about_a_third_more_arithmetic(task: str) -> None:
    # the layers' forward pass runs twice; the AR clean stream's last layer, whose output no
    # one reads, computes only its keys and values, so its backward has nothing to redo
    cfg = _cfg(TASKS[task], "model.depth=12", "model.blocks=3" if "e2e" not in task
               else "model.blocks=1", "train.checkpoint_layers=true")
    counted = step_bytes(cfg, 0)
    assert counted["flops"] == step_bytes(_cfg(TASKS[task], "model.depth=12", "model.blocks=3"
                                               if "e2e" not in task else "model.blocks=1"),
                                          0)["flops"]  # the model's, as without it
    assert 1.2 < counted["work_flops"] / counted["flops"] < 1.36, counted


def test_the_plan_rates_a_checkpointed_step_by_its_work() -> None:
    from dbparallel.training.cluster_fit import Cluster

    cluster = Cluster(cpus=64, gpus=4, source="runtime.devices", device_name="H100")
    rates = []
    for more in ([], ["train.checkpoint_layers=true"]):
        cfg = _cfg(["task=dit"], "runtime.gpus_per_block=1", "runtime.device_name=H100", *more)
        rates.append(plan(cfg, cluster)["cluster"]["estimated_steps_per_s"][0])
    counted = step_bytes(_cfg(["task=dit"], "train.checkpoint_layers=true"), 0)
    assert rates[0] / rates[1] == pytest.approx(counted["work_flops"] / counted["flops"])
