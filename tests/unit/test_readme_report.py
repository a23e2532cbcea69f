"""Every key of a run's report.json (the run's, each block's row's, the assembly's) is named
in the README or the docs, where a reader of the file looks it up; the lines docs/history.md
shows of metrics.jsonl and assembly.jsonl hold the keys a run writes, and docs/operations.md
lists the keys of `dbparallel status --json`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dbparallel import cli

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "jobs" / "tiny_cpu.yaml")


def _named() -> set[str]:
    """Every `word` the README and docs/*.md quote as code."""
    text = "\n".join(p.read_text() for p in [ROOT / "README.md", *ROOT.glob("docs/*.md")])
    return set(re.findall(r"`\"?([a-z_]+)\"?`", text)) | set(re.findall(r"\"([a-z_]+)\"", text))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-block run of jobs/tiny_cpu.yaml, 8 steps a block (a metrics line at 4, 8)."""
    run = tmp_path_factory.mktemp("report") / "run"
    assert cli.main(["train", TINY, "--local", "metrics.port=0", "train.steps=8",
                     "train.warmup_steps=0", f"run.dir={run}"]) == 0
    return run


def test_every_report_key_is_documented(tiny_run: Path) -> None:
    report = json.loads((tiny_run / "report.json").read_text())
    keys = set(report) | set(report["per_block"][0]) | set(report["assembly"])
    assert keys - _named() == set()


def _history_examples() -> list[dict]:
    """The JSON lines docs/history.md quotes in its unlabelled code blocks, in order."""
    text = (ROOT / "docs" / "history.md").read_text()
    blocks = re.findall(r"```\n(\{.*?\})\n```", text, re.S)
    return [json.loads(b) for b in blocks]


def test_history_doc_quotes_the_keys_a_run_writes(tiny_run: Path) -> None:
    metrics_line, assembly_line = _history_examples()
    written = json.loads((tiny_run / "blocks/block_0/metrics.jsonl").read_text().splitlines()[0])
    assert list(metrics_line) == list(written)
    assembled = json.loads((tiny_run / "assembly.jsonl").read_text().splitlines()[-1])
    assert list(assembly_line) == list(assembled)


def test_status_json_keys_are_the_ones_operations_md_lists(tiny_run: Path) -> None:
    import dbparallel

    text = (ROOT / "docs" / "operations.md").read_text()
    section = text[text.index("### `--json`"):text.index("### A run on Ray")]
    listed = set(re.findall(r"`([a-z_]+)`", section)) - {"null"}
    shown = dbparallel.status(tiny_run).to_json()
    assert set(shown) | set(shown["blocks"][0]) == listed
