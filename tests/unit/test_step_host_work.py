"""Host work a training step does not redo: the text blocks' constant tensors (rotary tables,
the noisy stream's mask) are built once and reused by every later step, with the numbers they
had when each call built them; a network already in training mode is not walked to set it."""

from __future__ import annotations

import pytest
import torch

from dbparallel.config import load_config
from dbparallel.models import layers, lm
from dbparallel.models.layers import rotary
from dbparallel.tasks import build_task
from dbparallel.training.block_trainer import BlockTrainer

SMALL = ["data.source=shakespeare", "model.depth=2", "model.hidden=32", "model.heads=2",
         "data.seq_len=16", "sample.prompt_len=4", "sample.gen_len=8", "train.batch_size=4",
         "model.blocks=1"]


def _counted(monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> list[int]:
    """Calls of ``module.name`` from now on, counted in the returned list's one number."""
    calls, real = [0], getattr(module, name)

    def counting(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counting)
    return calls


def _step(task, net, ids: torch.Tensor, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    net.zero_grad()
    task.loss_on(net, {"tokens": ids}, 0, task.draw(0, {"tokens": ids}, len(ids), g)
                 ).sum().backward()


@pytest.mark.parametrize("name", ["mdm", "ar"])
def test_a_second_step_builds_no_rotary_table_or_mask(monkeypatch, name: str) -> None:
    task = build_task(load_config([], [f"task={name}", *SMALL]))
    net = task.build_block(0)
    ids = torch.randint(0, 84, (4, 16), generator=torch.Generator().manual_seed(0))
    _step(task, net, ids, 0)
    tables = _counted(monkeypatch, layers, "_rotary_angles")
    masks = _counted(monkeypatch, lm, "noisy_mask")
    _step(task, net, ids, 1)
    assert tables == [0] and masks == [0]


def test_the_cached_rotary_table_is_the_one_built_each_time() -> None:
    q = torch.randn(2, 2, 5, 8, generator=torch.Generator().manual_seed(0))
    built = rotary(q, torch.arange(3, 8))  # a tensor of positions: built at each call
    assert torch.equal(rotary(q, range(3, 8)), built)
    assert torch.equal(rotary(q, range(3, 8)), built)  # from the cache
    for dtype in (torch.float32, torch.bfloat16):
        cached = layers._cached_rotary_angles(range(3, 8), 4, q.device, dtype)
        assert cached is layers._cached_rotary_angles(range(3, 8), 4, q.device, dtype)
        fresh = layers._rotary_angles(range(3, 8), 4, q.device, dtype)
        assert all(torch.equal(a, b) and a.dtype == dtype for a, b in zip(cached, fresh,
                                                                          strict=True))


def test_tables_first_built_for_sampling_serve_a_training_step() -> None:
    """A table or mask first made in inference mode is an ordinary tensor: a training step's
    backward can save it (torch refuses to save an inference tensor)."""
    task = build_task(load_config([], ["task=ar", *SMALL, "data.seq_len=24"]))
    net = task.build_block(0)
    ids = torch.randint(0, 84, (4, 24), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        task.loss_on(net, {"tokens": ids}, 0,
                     task.draw(0, {"tokens": ids}, 4, torch.Generator().manual_seed(0)))
    _step(task, net, ids, 1)
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
    # (CPU attention saves no mask for backward; CUDA's memory-efficient kernel does)
    with torch.inference_mode():
        mask = lm.cached_noisy_mask(5, 7, 2, torch.device("cpu"))
        tables = layers._cached_rotary_angles(range(2, 7), 3, torch.device("cpu"),
                                              torch.float32)
    assert not any(x.is_inference() for x in (mask, *tables))


def test_a_step_sets_training_mode_only_where_it_is_not_set(monkeypatch) -> None:
    trainer = BlockTrainer(load_config([], ["task=mdm", *SMALL]), 0)
    batch = {"tokens": torch.randint(0, 84, (4, 16), generator=torch.Generator().manual_seed(0))}
    trainer.train_step(batch)
    walks = _counted(monkeypatch, torch.nn.Module, "train")
    trainer.train_step(batch)
    assert walks == [0]
    trainer.model.eval()
    trainer.train_step(batch)  # a network put in eval mode trains in training mode again
    assert trainer.model.training and all(m.training for m in trainer.model.modules())
