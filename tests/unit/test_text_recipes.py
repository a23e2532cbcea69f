"""The tiny text recipes end to end in local mode, and their baselines through the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dbparallel import cli
from dbparallel.config import load_config
from dbparallel.training.plan import plan

ROOT = Path(__file__).resolve().parents[2]
# a few steps and small evaluations: the path is the point here, not the quality
FAST = ["train.steps=4", "train.checkpoint_every=4", "train.log_every=2",
        "sample.eval_samples=10", "sample.scorer_steps=2", "sample.text_samples=2",
        "sample.steps=4", "sample.gen_len=8", "metrics.port=0"]
EXPECTED = {
    "mdm": {"bpc"},
    "ar": {"bpc", "bpc_sigma_max", "gen_ppl", "sample_entropy", "data_ppl", "data_entropy"},
    "looped": {"bpc", "bpc_sigma_max", "gen_ppl", "sample_entropy", "data_ppl", "data_entropy",
               "train_memory_bytes_diffusionblocks", "train_memory_bytes_bptt",
               "train_activation_bytes_diffusionblocks", "train_activation_bytes_bptt"},
}


def _text_doc_names() -> set[str]:
    """The `names` docs/text.md quotes, a `prefix_{a,b}` read as `prefix_a` and `prefix_b`."""
    names = set()
    for quoted in re.findall(r"`([a-z_{},]+)`", (ROOT / "docs" / "text.md").read_text()):
        head, _, rest = quoted.partition("{")
        names |= {head + tail for tail in rest.rstrip("}").split(",")} if rest else {quoted}
    return names


def _recipe(task: str) -> Path:
    return ROOT / "jobs" / f"{task}_shakespeare_tiny.yaml"


@pytest.mark.parametrize("task", ["mdm", "ar", "looped"])
def test_tiny_recipe_trains_and_assembles(task: str, tmp_path: Path, capsys) -> None:
    cfg = load_config([_recipe(task)], [f"run.dir={tmp_path}", *FAST])
    assert cli.main(["train", str(_recipe(task)), "--local", f"run.dir={tmp_path}", *FAST]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    # the blocks' bpc is the sampler's, not a likelihood: the summary says which one is
    said = "bpc: of the final logits, where each token's chain has already chosen a token"
    assert (said in capsys.readouterr().out) == (task in ("ar", "looped"))
    assert report["task"] == task and report["blocks"] == cfg.model.blocks
    assert all(row["steps"] == 4 and row["peak_memory_bytes"] > 0 for row in report["per_block"])
    assert set(report["assembly"]) == EXPECTED[task] | {"block_steps_min", "eval_on_test"}
    assert report["assembly"]["eval_on_test"] == 1.0  # Shakespeare has a test split
    # docs/text.md says what each of the task's metrics is
    assert EXPECTED[task] - _text_doc_names() == set()
    assert 0 < report["assembly"]["bpc"] < 40
    samples = (tmp_path / "samples.txt").read_text(encoding="utf-8")
    B = cfg.model.blocks
    assert samples.startswith(f"{task}, {B} block{'s' if B != 1 else ''}, objective")
    assert len(json.loads((tmp_path / "vocab.json").read_text())["vocab"]) == 84
    if task == "ar":  # and `dbparallel eval` of the run says it too
        assert cli.main(["eval", str(tmp_path)]) == 0
        assert said in capsys.readouterr().out
    if task == "looped":
        a = report["assembly"]
        assert a["train_activation_bytes_bptt"] > 1.5 * a["train_activation_bytes_diffusionblocks"]


@pytest.mark.parametrize("task", ["mdm", "ar", "looped"])
def test_baseline_is_the_end_to_end_model(task: str, tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "base"
    # --local trains in this process, whatever the recipe says of replicas (without it,
    # replicas train data-parallel on Ray: tests/ray/test_replicas_ray.py)
    local = ["--local", "runtime.replicas_per_block=2"] if task == "ar" else []
    assert cli.main(["baseline", str(_recipe(task)), f"run.dir={run_dir}", *FAST, *local]) == 0
    # an end-to-end model's bpc is its likelihood: no note sends the reader elsewhere
    assert "bpc: of the final logits" not in capsys.readouterr().out
    report = json.loads((run_dir / "report.json").read_text())
    assert report["blocks"] == 1 and len(report["per_block"]) == 1
    assert report["per_block"][0]["replicas"] == 1
    expected = EXPECTED[task] - ({"bpc_sigma_max"} if task == "ar" else set())
    assert set(report["assembly"]) == expected | {"block_steps_min", "eval_on_test"}
    samples = (run_dir / "samples.txt").read_text(encoding="utf-8")
    assert samples.startswith(f"{task}, 1 block, objective end_to_end")


@pytest.mark.parametrize("task", ["mdm", "ar", "looped"])
def test_plan_of_text_recipes(task: str) -> None:
    cfg = load_config([_recipe(task)])
    result = plan(cfg)
    assert result["blocks"] == cfg.model.blocks and len(result["mass"]) == cfg.model.blocks
    assert sum(result["mass"]) == pytest.approx(1.0, abs=1e-3)
    assert all(m > 0 for m in result["estimated_memory_bytes"])


def test_a_tokenizer_built_otherwise_than_the_run_s_is_refused(tmp_path: Path) -> None:
    """A node whose tokenizer, built from the run's text, is not the run's (vocab.json): a
    BPE built by another version of the tokenizers package gives other token ids for the
    same rows, which the data index (row counts, files) does not show."""
    from dbparallel.data.sources import open_data
    from dbparallel.errors import DataError
    from dbparallel.training.data_pin import VOCAB_FILE, pin_data
    from dbparallel.training.storage import Storage

    cfg = load_config([_recipe("ar")], [f"run.dir={tmp_path}"])
    index, storage = open_data(cfg.data), Storage(str(tmp_path))
    pin_data(storage, index, start=True)
    pin_data(storage, index)  # the same tokenizer: nothing to say
    vocab = json.loads((tmp_path / VOCAB_FILE).read_text())
    vocab["vocab"] = vocab["vocab"][1:] + vocab["vocab"][:1]  # the same characters, other ids
    (tmp_path / VOCAB_FILE).write_text(json.dumps(vocab))
    with pytest.raises(DataError, match=r"vocab\.json: the tokenizer built on .* from the "
                                        r"run's text \(data.tokenizer=char\) is not the run's"):
        pin_data(storage, index)


def test_a_tokenizer_another_process_wrote_first_is_never_written_over(tmp_path: Path) -> None:
    """Two processes starting one new run at once: the one that pinned the data finds
    vocab.json written by the other since; it checks its tokenizer against it (refused where
    they differ) rather than writing over it, whichever pinned the data."""
    from dbparallel.data.sources import open_data
    from dbparallel.errors import DataError
    from dbparallel.training.data_pin import VOCAB_FILE, pin_data
    from dbparallel.training.storage import Storage

    cfg = load_config([_recipe("ar")], [f"run.dir={tmp_path}"])
    index = open_data(cfg.data)
    pin_data(Storage(str(tmp_path / "ref")), index, start=True)
    theirs = json.loads((tmp_path / "ref" / VOCAB_FILE).read_text())
    theirs["vocab"] = theirs["vocab"][1:] + theirs["vocab"][:1]  # other ids

    class OtherWritesFirst(Storage):
        def create_bytes(self, rel: str, data: bytes) -> bool:
            if rel == VOCAB_FILE:  # the other process's tokenizer lands just before
                self.write_json(VOCAB_FILE, theirs)
            return super().create_bytes(rel, data)

    with pytest.raises(DataError, match=r"vocab\.json: the tokenizer built on .* is not the "
                                        r"run's"):
        pin_data(OtherWritesFirst(str(tmp_path / "run")), index, start=True)
    assert json.loads((tmp_path / "run" / VOCAB_FILE).read_text()) == theirs
