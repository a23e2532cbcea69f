"""A run whose blocks end before their learning-rate warm-up is told so before it starts."""

from __future__ import annotations

from pathlib import Path

from dbparallel.cli import main
from dbparallel.config import load_config
from dbparallel.training.schedule import warmup_warning

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "jobs" / "tiny_cpu.yaml")  # train.warmup_steps=4


def _warnings(caplog, run_dir: Path, *overrides: str) -> list[str]:
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert main(["train", TINY, "--local", f"run.dir={run_dir}", "metrics.port=0",
                     "train.checkpoint_every=2", *overrides]) == 0
    return [r.getMessage() for r in caplog.records if "train.warmup_steps" in r.getMessage()]


def test_steps_below_the_warmup_are_warned_of_naming_both(tmp_path, caplog) -> None:
    said = _warnings(caplog, tmp_path / "run", "train.steps=2")
    assert len(said) == 1
    assert said[0].startswith("train.steps=2 is below train.warmup_steps=4: ")
    assert "never reaches train.lr=0.001 (it ends at 2/4 of it)" in said[0]


def test_block_steps_below_the_warmup_name_their_blocks(tmp_path, caplog) -> None:
    said = _warnings(caplog, tmp_path / "run", "train.block_steps=[2,5]")
    assert said == [said[0]]
    assert said[0].startswith("train.block_steps=[2, 5]: block 0 takes 2 steps, below "
                              "train.warmup_steps=4: ")
    assert "block 1" not in said[0]


def test_steps_that_reach_the_warmup_are_not_warned_of() -> None:
    cfg = load_config([TINY])  # 12 steps
    assert warmup_warning(cfg.train, cfg.model.blocks) is None
    cfg = load_config([TINY], ["train.steps=4"])  # the last warm-up step runs at train.lr
    assert warmup_warning(cfg.train, cfg.model.blocks) is None
