"""A block whose step does not fit in memory: one line naming the block, the step, the device
and what was asked, with the keys that make it fit; the run resumes with them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dbparallel import cli
from dbparallel.config import load_config
from dbparallel.training import loop
from dbparallel.training.out_of_memory import block_out_of_memory, out_of_memory, what_was_asked

# CUDA's own wording (torch 2.x), which this machine cannot make: its first sentences are kept
CUDA_SAID = ("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
             "79.19 GiB of which 1.25 GiB is free. Including non-PyTorch memory, this process "
             "has 77.93 GiB memory in use. Of the allocated memory 75.10 GiB is allocated by "
             "PyTorch, and 1.31 GiB is reserved by PyTorch but unallocated. If reserved but "
             "unallocated memory is large try setting "
             "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.")


def test_a_step_that_does_not_fit_stops_the_run_in_one_line_and_it_resumes_with_pieces(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    run = tmp_path / "run"
    args = ["train", "--local", f"run.dir={run}", "model.depth=2", "model.blocks=2",
            "train.steps=4", "train.warmup_steps=1", "sample.eval_samples=10",
            "sample.per_class=1", "sample.steps=2", "metrics.port=0"]
    step = loop.BlockRun._step

    def too_large(self):  # block 1's third step asks the CPU allocator for a petabyte
        if self.trainer.block == 1 and self.trainer.step == 2:
            torch.empty(2**50, dtype=torch.uint8)
        return step(self)

    monkeypatch.setattr(loop.BlockRun, "_step", too_large)
    assert cli.main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        "dbparallel: run failed: block 1: out of memory taking step 3 on cpu (tried to "
        "allocate 1048576.00 GiB): the block's step does not fit in its device's memory "
        "(`dbparallel plan` with the same recipe shows what it holds). train.micro_batches=2 "
        "(or more: the same step in pieces of the batch), train.checkpoint_layers=true (each "
        "layer's activations kept only as it runs) or more replicas sharing each batch on "
        "more devices (runtime.replicas_per_block=1 now): each shrinks what a device holds of "
        "the step, which stays the same, and the run resumes with it as it is; more blocks "
        "(model.blocks=2 now: smaller ones) make a new run; a smaller train.batch_size=64 "
        "trains otherwise")
    failed = json.loads((run / "blocks" / "block_1" / "failed.json").read_text())
    assert (failed["type"], failed["step"]) == ("OutOfMemory", 3)
    monkeypatch.setattr(loop.BlockRun, "_step", step)
    assert cli.main([*args, "train.micro_batches=2"]) == 0  # the same run, resumed
    assert json.loads((run / "report.json").read_text())["per_block"][1]["steps"] == 4
    assert not (run / "blocks" / "block_1" / "failed.json").exists()


def test_cuda_s_error_is_said_by_its_first_sentences_and_keys_already_set_are_not_offered(
        ) -> None:
    error = torch.cuda.OutOfMemoryError(CUDA_SAID)
    assert out_of_memory(error) and out_of_memory(RuntimeError(CUDA_SAID))  # through Ray too
    assert not out_of_memory(RuntimeError("shapes cannot be multiplied"))
    assert what_was_asked(error) == ("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 "
                                     "has a total capacity of 79.19 GiB of which 1.25 GiB "
                                     "is free.")
    cfg = load_config([], ["train.micro_batches=4", "train.checkpoint_layers=true",
                           "runtime.replicas_per_block=2"])
    said = str(block_out_of_memory(error, cfg, 0, 12, "cuda:0"))
    assert said.startswith("block 0: out of memory taking step 12 on cuda:0 (CUDA out of "
                           "memory. Tried to allocate 2.00 GiB.")
    assert "micro_batches" not in said and "checkpoint_layers" not in said
    assert "more replicas sharing each batch on more devices (runtime.replicas_per_block=2 " \
           "now): each shrinks" in said
    baseline = load_config([], ["model.blocks=1", "train.objective=end_to_end"])
    assert "model.blocks" not in str(block_out_of_memory(error, baseline, 0, 1, "cuda:0"))


def test_a_block_that_does_not_fit_at_its_start_is_said_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    def too_large(self, *args, **kwargs):  # its weights moved to a device too small
        torch.empty(2**50, dtype=torch.uint8)

    monkeypatch.setattr(loop.BlockRun, "__init__", too_large)
    assert cli.main(["train", "--local", f"run.dir={tmp_path / 'run'}", "metrics.port=0"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "dbparallel: run failed: tried to allocate 1048576.00 GiB: the block does not fit in "
        "its device's memory (`dbparallel plan` with the same recipe shows what it holds): "
        "more blocks (model.blocks) make smaller ones, in a new run")
