"""A plan counts the step of blocks alike once (training/plan.py ``_alike``): the same bytes
and FLOPs as counting every block on its own, for every task."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbparallel.config import load_config
from dbparallel.tasks import build_task
from dbparallel.training import plan as plans

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ["vit_tiny.yaml", "dit_fashion_tiny.yaml", "mdm_shakespeare_tiny.yaml",
           "ar_shakespeare_tiny.yaml", "looped_shakespeare_tiny.yaml"]
TWO = {"looped_shakespeare_tiny.yaml": ["model.loop_iterations=2"]}  # one core, two passes


@pytest.mark.parametrize("recipe", RECIPES)
def test_blocks_counted_once_count_what_each_counts_alone(recipe: str, monkeypatch) -> None:
    two = TWO.get(recipe, ["model.blocks=2", "model.depth=2"])
    cfg = load_config([ROOT / "jobs" / recipe], [*two, "train.checkpoint_layers=true"])
    alone = []
    for b in range(cfg.model.blocks):
        plans._COUNTED.clear()
        alone.append(plans.step_bytes(cfg, b))
    plans._COUNTED.clear()
    steps: list[int] = []
    task_class = type(build_task(cfg))
    loss_on = task_class.loss_on

    def counted(self, net, batch, block, draws):  # noqa: ANN001, ANN202 (the task's own)
        steps.append(block)
        return loss_on(self, net, batch, block, draws)

    monkeypatch.setattr(task_class, "loss_on", counted)
    together = [plans.step_bytes(cfg, b) for b in range(cfg.model.blocks)]
    assert together == alone and all(s["total"] > 0 and s["flops"] > 0 for s in alone)
    # block 0's step with its layers checkpointed, and without for the model's FLOPs; none for
    # the blocks after it, which are alike
    assert steps == [0, 0]
    last = cfg.model.blocks - 1
    together[last]["total"] = 0  # a caller's copy is its own
    assert plans.step_bytes(cfg, last) == alone[last] and steps == [0, 0]
    other = plans.step_bytes(load_config([ROOT / "jobs" / recipe], [
        *two, "train.checkpoint_layers=true", f"train.batch_size={cfg.train.batch_size * 2}"]),
        last)
    assert other["total"] > alone[last]["total"] and len(steps) == 4  # another config
