"""Blocks trained by separate processes (`train --local --block b`), evaluation of a past
step (`eval --step`, `train.keep_snapshots`) and `train.precision`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dbparallel.cli import main
from dbparallel.config import load_config
from dbparallel.data.sources import digits_table, open_data
from dbparallel.training.block_trainer import BlockTrainer
from dbparallel.training.checkpoint import BlockCheckpoints
from dbparallel.training.loop import BlockRun
from dbparallel.training.storage import Storage

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "jobs" / "tiny_cpu.yaml")


def _train(run_dir: Path, *args: str) -> int:
    return main(["train", TINY, "--local", f"run.dir={run_dir}", "metrics.port=0", *args])


def _eval(run_dir: Path, capsys, *args: str) -> dict:
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def _ema(run_dir: Path, block: int) -> dict:
    return BlockCheckpoints(Storage(str(run_dir)), block).load_latest("snapshot")["ema"]


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("whole") / "run"
    assert _train(run_dir, "train.keep_snapshots=5") == 0
    return run_dir


def test_blocks_trained_apart_equal_blocks_trained_together(whole, tmp_path, capsys) -> None:
    run_dir = tmp_path / "run"
    assert _train(run_dir, "--block", "1") == 0
    out = capsys.readouterr().out
    assert "assembly: not run" in out and f"dbparallel eval {run_dir}" in out
    held = json.loads((run_dir / "blocks/block_1/measured.json").read_text())["heldout_loss"]
    assert "block 1: steps=12 final_loss=" in out and f" heldout_loss={held:.5f} " in out
    assert not (run_dir / "report.json").exists()
    assert main(["eval", str(run_dir)]) == 2  # block 0 is missing
    assert "block(s) [0] have no snapshot" in capsys.readouterr().err
    assert _train(run_dir, "--block", "0") == 0
    for b in (0, 1):
        for name, value in _ema(whole, b).items():
            assert torch.equal(value, _ema(run_dir, b)[name]), (b, name)
    assert _eval(run_dir, capsys) == _eval(whole, capsys)


@pytest.mark.parametrize("args, message", [
    (["--block", "0", "runtime.local=false"], "--block: trains a subset"),
    (["--block", "2"], "--block 2: must be in 0..1"),
])
def test_bad_block_selection_is_refused(tmp_path, capsys, args, message) -> None:
    run_dir = tmp_path / "run"
    code = main(["train", TINY, f"run.dir={run_dir}", "metrics.port=0", *args]
                + (["--local"] if "runtime.local=false" not in args else []))
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (run_dir / "blocks").exists()


def test_eval_of_a_past_step_equals_a_run_stopped_there(whole, tmp_path, capsys) -> None:
    # tiny_cpu checkpoints every 6 of 12 steps; the schedule after warm-up does not depend
    # on train.steps, so the snapshot of step 6 is what a 6-step run ends with.
    short = tmp_path / "short"
    assert _train(short, "train.steps=6") == 0
    assert _eval(whole, capsys, "--step", "6") == _eval(short, capsys)
    assert _eval(whole, capsys, "--step", "12") == _eval(whole, capsys)


def test_eval_of_a_step_not_kept_names_the_kept_ones(whole, capsys) -> None:
    assert main(["eval", str(whole), "--step", "7"]) == 2
    err = capsys.readouterr().err
    assert "no snapshot of step 7" in err and "[6, 12]" in err


def test_only_the_newest_snapshots_are_kept_by_default(tmp_path) -> None:
    run_dir = tmp_path / "run"
    assert _train(run_dir) == 0
    assert BlockCheckpoints(Storage(str(run_dir)), 0).steps("snapshot") == [12]


def _losses(precision: str, tmp_path: Path) -> list[float]:
    cfg = load_config([TINY], [f"run.dir={tmp_path / precision}", f"train.precision={precision}"])
    run = BlockRun(cfg, 0, open_data(cfg.data), Storage(str(tmp_path / precision)))
    return [run.trainer.train_step(run.batch(s)).loss for s in range(4)]


def test_precision_bf16_trains_and_differs_from_fp32(tmp_path) -> None:
    fp32, bf16 = _losses("fp32", tmp_path), _losses("bf16", tmp_path)
    assert all(torch.isfinite(torch.tensor(bf16)))
    assert bf16 != fp32
    assert max(abs(a - b) for a, b in zip(fp32, bf16, strict=True)) < 0.1 * max(fp32)
    assert _losses("tf32", tmp_path) == fp32  # TF32 applies to CUDA only


def test_bad_precision_is_refused(tmp_path, capsys) -> None:
    assert _train(tmp_path / "run", "train.precision=fp8") == 2
    assert "train.precision" in capsys.readouterr().err


def test_memory_is_measured_on_the_first_step_only(tiny_cfg, monkeypatch) -> None:
    from dbparallel.core.meta_memory import LiveSavedBytes

    calls = []
    record = LiveSavedBytes.record
    monkeypatch.setattr(LiveSavedBytes, "record",
                        lambda self: calls.append(1) or record(self))
    trainer = BlockTrainer(tiny_cfg, 0)
    run_batch = {k: v[:32] for k, v in trainer.task.decode(digits_table()).items()}
    trainer.train_step(run_batch)
    first = trainer.memory
    trainer.train_step(run_batch)
    trainer.train_step(run_batch)
    assert len(calls) == 1  # the saved-tensor hooks ran in the first step alone
    assert first is not None and first.activations > 0 and trainer.memory is first


def test_progress_lines_name_only_the_blocks_trained_here(capsys) -> None:
    from dbparallel.runtime.progress import BlockBars

    bars = BlockBars([2], 10, enabled=False, line_every_s=0)
    bars.update(2, 5, 0.5)
    bars.close()
    assert capsys.readouterr().err == "progress: block 2 5/10 loss 0.5000\n"
