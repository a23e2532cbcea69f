"""A rerun with other train.* settings: config.yaml records them only where a block trains on
with them (local mode, no Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from dbparallel.cli import main

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "jobs" / "tiny_cpu.yaml")
FAST = ["train.checkpoint_every=2", "train.log_every=2", "train.warmup_steps=1",
        "metrics.port=0"]


def _train(run_dir: Path, *args: str) -> int:
    return main(["train", TINY, "--local", f"run.dir={run_dir}", *FAST, *args])


def _stored(run_dir: Path) -> dict:
    return yaml.safe_load((run_dir / "config.yaml").read_text())


def _resume_warning(caplog) -> str:
    said = [r.getMessage() for r in caplog.records if "with other settings" in r.getMessage()]
    assert len(said) == 1, said
    caplog.clear()
    return said[0]


def test_a_finished_run_keeps_its_training_settings_and_records_the_others(
        tmp_path, caplog) -> None:
    run_dir = tmp_path / "run"
    assert _train(run_dir, "train.steps=2") == 0
    with caplog.at_level("WARNING"):
        assert _train(run_dir, "train.steps=2", "train.lr=0.01", "sample.steps=4") == 0
    said = _resume_warning(caplog)
    assert "nothing left to train: the run keeps its recorded settings (train.lr)" in said
    assert "config.yaml now records sample.steps" in said
    stored = _stored(run_dir)
    assert stored["train"]["lr"] == 0.001  # every step ran at it
    assert stored["sample"]["steps"] == 4  # the assembly just made used it
    report = json.loads((run_dir / "report.json").read_text())
    assert [(r["steps"], r["resumed_from"]) for r in report["per_block"]] == [(2, 2), (2, 2)]
    # a lower train.steps trains no step either: the run says the steps its blocks took
    with caplog.at_level("WARNING"):
        assert _train(run_dir, "train.steps=1") == 0
    assert "keeps its recorded settings (train.steps)" in _resume_warning(caplog)
    assert _stored(run_dir)["train"]["steps"] == 2
    # more steps: the blocks train on with the new rate, which config.yaml records
    with caplog.at_level("WARNING"):
        assert _train(run_dir, "train.steps=3", "train.lr=0.01") == 0
    assert "config.yaml now records them" in _resume_warning(caplog)
    assert (_stored(run_dir)["train"]["steps"], _stored(run_dir)["train"]["lr"]) == (3, 0.01)


def test_a_block_subset_keeps_the_settings_unless_a_block_of_the_run_trains_on(
        tmp_path, caplog) -> None:
    """--block B writes config.yaml for the whole run: every block's progress decides, each
    at its own train.block_steps count."""
    run_dir = tmp_path / "run"
    assert _train(run_dir, "train.block_steps=[2,3]") == 0
    with caplog.at_level("WARNING"):
        assert _train(run_dir, "train.block_steps=[2,3]", "train.lr=0.01", "--block", "0") == 0
    assert "nothing left to train" in _resume_warning(caplog)
    assert _stored(run_dir)["train"]["lr"] == 0.001
    # block 0 is done at 2 steps, block 1 trains on to 4 (by its own process)
    with caplog.at_level("WARNING"):
        assert _train(run_dir, "train.block_steps=[2,4]", "train.lr=0.01", "--block", "0") == 0
    assert "config.yaml now records them" in _resume_warning(caplog)
    assert (_stored(run_dir)["train"]["block_steps"], _stored(run_dir)["train"]["lr"]) == \
        ([2, 4], 0.01)
