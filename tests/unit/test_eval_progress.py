"""A CPU evaluation far larger than the training before it says which keys shrink it, before
it starts; its long loops (the gen_ppl scorer's steps, the prompts continued) write progress
lines to stderr off a terminal."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dbparallel import cli
from dbparallel.config import load_config
from dbparallel.data.sources import open_data
from dbparallel.data.tokenizer import load_tokenizer
from dbparallel.training import progress
from dbparallel.training.eval.scorer import scorer_path
from dbparallel.training.eval.text import cpu_note, scorer_key

ROOT = Path(__file__).resolve().parents[2]
# the command of a first try: a few training steps, the default evaluation
FIRST_TRY = ["task=ar", "data.source=shakespeare", "model.blocks=2", "model.depth=2",
             "train.steps=2"]


def _note(recipes: list[Path], overrides: list[str]) -> str | None:
    cfg = load_config(recipes, overrides)
    index = open_data(cfg.data)
    return cpu_note(cfg, index, load_tokenizer(index.meta), "cpu")


@pytest.mark.parametrize("task", ["ar", "looped", "mdm"])
def test_the_tiny_recipes_get_no_note(task: str, tmp_path: Path) -> None:
    assert _note([ROOT / "jobs" / f"{task}_shakespeare_tiny.yaml"],
                 [f"run.dir={tmp_path}"]) is None


def test_a_first_try_is_told_which_keys_shrink_its_evaluation(tmp_path: Path) -> None:
    overrides = [*FIRST_TRY, f"run.dir={tmp_path}"]
    note = _note([], overrides)
    assert note is not None
    assert note.startswith("evaluation: on a CPU this is far more work than the 4 training "
                           "steps before it (500 prompts to continue, 1500 gen_ppl scorer "
                           "steps); lower sample.eval_samples and sample.scorer_steps")
    cfg = load_config([], overrides)
    index = open_data(cfg.data)
    tokenizer = load_tokenizer(index.meta)
    path = scorer_path(scorer_key(cfg, tokenizer, index), index.num_rows("train"),
                       cfg.data.seq_len, cfg.data.vocab_size, cfg.sample.scorer_steps)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()  # a scorer already cached is no work
    note = cpu_note(cfg, index, tokenizer, "cpu")
    assert note is not None and "scorer" not in note
    assert cpu_note(cfg, index, tokenizer, "cuda") is None
    assert _note([], [*overrides, "sample.eval_samples=40"]) is None


def _scorer_file(path: Path) -> Path:
    cfg = load_config([], ["task=ar", "data.source=text", f"data.path={path}",
                           "data.seq_len=16", "sample.prompt_len=4", "sample.gen_len=4"])
    index = open_data(cfg.data)
    return scorer_path(scorer_key(cfg, load_tokenizer(index.meta), index),
                       index.num_rows("train"), cfg.data.seq_len, cfg.data.vocab_size,
                       cfg.sample.scorer_steps)


def test_the_gen_ppl_scorer_is_keyed_by_the_text_not_its_path(tmp_path: Path) -> None:
    """A file edited in place with the same characters and row counts is other data: its
    runs must not be scored by the scorer trained on the text it held before."""
    book = tmp_path / "book.txt"
    book.write_text("the cat sat on a mat. " * 40)
    before = _scorer_file(book)
    stamp = book.stat().st_mtime_ns + 10**9  # a later time, even where times are coarse
    book.write_text("a mat sat on the cat. " * 40)  # same characters, same length
    os.utime(book, ns=(stamp, stamp))
    after = _scorer_file(book)
    assert after != before
    moved = tmp_path / "moved" / "book.txt"
    moved.parent.mkdir()
    moved.write_text(book.read_text())
    assert _scorer_file(moved) == after  # the same text elsewhere: the same scorer


def test_a_run_says_so_before_its_evaluation_and_shows_its_progress(
        tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(progress, "LINE_EVERY_S", 0.0)  # a line at every update
    fast = ["model.blocks=1", "train.steps=1", "train.checkpoint_every=1", "model.hidden=32",
            "data.seq_len=32", "sample.prompt_len=8", "sample.gen_len=8",
            "sample.eval_samples=10", "sample.scorer_steps=11", "sample.text_samples=2",
            "sample.diagnostic_rows=16", "data.validate=false", "metrics.port=0",
            f"run.dir={tmp_path}"]
    assert cli.main(["train", *FIRST_TRY, *fast, "--local"]) == 0
    err = capsys.readouterr().err
    note = err.index("evaluation: on a CPU this is far more work than the 1 training step "
                     "before it (11 gen_ppl scorer steps); lower sample.scorer_steps")
    assert "continuing prompts: 10/10 prompt" in err[note:]
    scorer = err.index("evaluation: training the gen_ppl scorer for this data once (11 steps")
    assert note < scorer
    lines = [x for x in err[scorer:].splitlines() if x.startswith("gen_ppl scorer")]
    assert [x.split(",")[0] for x in lines] == [f"gen_ppl scorer (once per data set): {n}/11 "
                                                 "step" for n in range(1, 12)]
    assert lines[-1].endswith("s") and "done in" in lines[-1]
