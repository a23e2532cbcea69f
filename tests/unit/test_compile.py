"""train.compile: the compiled step trains the same block as the eager one.

torch.compile on the CPU generates C++ and needs a working compiler; without one the test skips
and says why. The compiled graph reorders float sums (fused kernels), so agreement is to a
tolerance, not bit for bit: over 3 steps of the tiny block the losses agree to 1e-5 relative
and the weights to 1e-5 absolute (measured: 1e-7 and 3e-7).
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch

from dbparallel.data.sources import digits_table
from dbparallel.training.block_trainer import BlockTrainer


@functools.cache
def _compile_problem() -> str | None:
    """Why torch.compile cannot run here (None: it can)."""
    try:
        torch.compile(lambda x: torch.sin(x) + 1)(torch.ones(3))
    except Exception as err:  # any failure of the toolchain is a reason to skip
        return f"torch.compile cannot run on this machine: {type(err).__name__}: {err}"[:300]
    return None


# two micro-batches compile the same graph again: another 20 s, opt-in
@pytest.mark.parametrize("pieces", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_compiled_step_matches_eager(tiny_cfg, pieces: int) -> None:
    problem = _compile_problem()
    if problem:
        pytest.skip(problem)
    from torch._dynamo.utils import counters

    tiny_cfg = copy.deepcopy(tiny_cfg)
    tiny_cfg.train.micro_batches = pieces
    compiled_cfg = copy.deepcopy(tiny_cfg)
    compiled_cfg.train.compile = True
    eager, compiled = BlockTrainer(tiny_cfg, 1), BlockTrainer(compiled_cfg, 1)
    batch = {k: v[:16] for k, v in eager.task.decode(digits_table()).items()}
    graphs = counters["stats"]["unique_graphs"]
    for _ in range(3):
        a, b = eager.train_step(batch), compiled.train_step(batch)
        assert b.loss == pytest.approx(a.loss, rel=1e-5)
    # it compiled one graph: no break, and the pieces of a step share it
    assert counters["stats"]["unique_graphs"] == graphs + 1
    for p, q in zip(eager.model.parameters(), compiled.model.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=0, atol=1e-5)
    # step 1 counts FLOPs eagerly, step 2 compiles: only step 3 is a steady compiled step
    assert (eager.timed_steps, compiled.timed_steps) == (2, 1)
    assert compiled.model_flops_per_step == eager.model_flops_per_step


def test_an_older_torch_gets_its_recompile_limit_under_the_old_name(tiny_cfg,
                                                                     monkeypatch) -> None:
    # torch before 2.7 names dynamo's limit cache_size_limit; recompile_limit does not exist
    import types

    old = types.SimpleNamespace(cache_size_limit=2)
    monkeypatch.setattr(torch._dynamo, "config", old)
    monkeypatch.setattr(torch, "compile", lambda fn, mode=None: fn)  # it reads the real config
    cfg = copy.deepcopy(tiny_cfg)
    cfg.train.compile = True
    BlockTrainer(cfg, 0)
    assert old.cache_size_limit == cfg.model.blocks + cfg.train.micro_batches + 4
    assert not hasattr(old, "recompile_limit")


@pytest.mark.parametrize("mode, pieces, kept", [
    ("reduce-overhead", 2, True), ("max-autotune", 3, True),
    ("reduce-overhead", 1, False), ("default", 2, False),
    ("max-autotune-no-cudagraphs", 2, False)])
def test_gradients_stay_allocated_where_cuda_graphs_would_overwrite_a_pieces(
        tiny_cfg, mode: str, pieces: int, kept: bool) -> None:
    # CUDA graphs hand an unset .grad their pool's memory, which the step's next piece
    # overwrites (torch raises "accessing gradient tensor output of CUDAGraphs"): with several
    # pieces a step, a step leaves zeroed gradients that the next one adds into. The first
    # step runs eagerly (it counts FLOPs), so nothing compiles here.
    cfg = copy.deepcopy(tiny_cfg)
    cfg.train.compile, cfg.train.compile_mode, cfg.train.micro_batches = True, mode, pieces
    trainer = BlockTrainer(cfg, 0)
    assert trainer.train_step({k: v[:16] for k, v in
                               trainer.task.decode(digits_table()).items()}).finite
    grads = [p.grad for p in trainer.model.parameters()]
    if kept:
        assert all(g is not None and not g.any() for g in grads)
    else:
        assert all(g is None for g in grads)
