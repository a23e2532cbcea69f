"""Every key of a run's report.json (the run's, each block's row's, the assembly's) is named
in the README or the docs, where a reader of the file looks it up."""

from __future__ import annotations

import json
import re
from pathlib import Path

from dbparallel import cli

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "jobs" / "tiny_cpu.yaml")


def _named() -> set[str]:
    """Every `word` the README and docs/*.md quote as code."""
    text = "\n".join(p.read_text() for p in [ROOT / "README.md", *ROOT.glob("docs/*.md")])
    return set(re.findall(r"`\"?([a-z_]+)\"?`", text)) | set(re.findall(r"\"([a-z_]+)\"", text))


def test_every_report_key_is_documented(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert cli.main(["train", TINY, "--local", "metrics.port=0", "train.steps=2",
                     "train.warmup_steps=0", f"run.dir={run}"]) == 0
    report = json.loads((run / "report.json").read_text())
    keys = set(report) | set(report["per_block"][0]) | set(report["assembly"])
    assert keys - _named() == set()
