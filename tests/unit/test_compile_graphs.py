"""What train.compile compiles is one graph for every task: the step's random draws are made
before it (Task.draw) and the loss given them (Task.loss_on) draws nothing and branches on no
tensor's value. torch._dynamo.explain traces without generating code, so no compiler is needed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from probes import random_batch

from dbparallel.config import load_config
from dbparallel.tasks.base import share_draws
from dbparallel.training.block_trainer import BlockTrainer
from dbparallel.training.seeding import generator
from dbparallel.training.step_pieces import pieces

ROOT = Path(__file__).resolve().parents[2]
TEXT = ["data.source=shakespeare", "model.depth=2", "model.hidden=32", "model.heads=2",
        "data.seq_len=16", "sample.prompt_len=4", "sample.gen_len=8"]
TASKS = {"dit": ["task=dit"], "vit": ["task=vit", "train.augment=flip_crop"],
         "vit-end-to-end": ["task=vit", "model.blocks=1", "train.objective=end_to_end"],
         "mdm": ["task=mdm", *TEXT], "ar": ["task=ar", *TEXT],
         "ar-end-to-end": ["task=ar", *TEXT, "model.blocks=1", "train.objective=end_to_end"],
         # three iterations of the core (of 8) unroll each part of its loop: the first, one
         # between others, the last
         "looped": ["task=looped", *TEXT, "model.blocks=1", "model.loop_iterations=3"],
         "looped-bptt": ["task=looped", *TEXT, "model.blocks=1", "model.loop_iterations=3",
                         "train.objective=end_to_end"]}


@pytest.mark.parametrize("checkpointed", [False, True], ids=["plain", "checkpointed"])
@pytest.mark.parametrize("overrides", TASKS.values(), ids=TASKS.keys())
def test_the_compiled_loss_is_one_graph(overrides: list[str], checkpointed: bool) -> None:
    cfg = load_config([ROOT / "jobs" / "tiny_cpu.yaml"],
                      ["train.batch_size=6", "train.micro_batches=2",
                       f"train.checkpoint_layers={str(checkpointed).lower()}", *overrides])
    trainer = BlockTrainer(cfg, 0)
    batch = random_batch(trainer.task, 6, seed=0)
    piece, share = pieces(batch, None, 2)[1]
    piece_draws = share_draws(trainer.task, 0, piece, share, generator(0, "step", 0, 0))
    torch._dynamo.reset()
    explained = torch._dynamo.explain(trainer._loss)(piece, piece_draws, share.total)
    reasons = [str(r.reason).splitlines()[0] for r in explained.break_reasons]
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), reasons
    # and it is the loss: the traced function gives the eager value
    torch.testing.assert_close(trainer._loss(piece, piece_draws, share.total),
                               trainer.task.loss(trainer.model, piece, 0,
                                                 generator(0, "step", 0, 0), share).mean()
                               * share.rows / share.total)
