"""``dbparallel eval``'s text output: counts (a looped network's training bytes, eval_rows)
print as whole numbers, scores with six significant digits."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

import dbparallel.cli_network as cli_network
from dbparallel import cli
from dbparallel.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def test_eval_prints_counts_whole_and_scores_rounded(monkeypatch: pytest.MonkeyPatch,
                                                      capsys) -> None:
    metrics = {"bpc": 18.341712, "eval_on_test": 1,
               "train_memory_bytes_diffusionblocks": 23962436, "kid_std": None}
    network = types.SimpleNamespace(cfg=load_config([ROOT / "jobs" / "mdm_shakespeare_tiny.yaml"]),
                                    evaluate=lambda data: metrics)
    monkeypatch.setattr(cli_network, "_load", lambda args: network)
    monkeypatch.setattr(cli_network, "network_data", lambda network, source, path: None)
    assert cli.main(["eval", "runs/x"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "bpc: 18.3417", "eval_on_test: 1", "train_memory_bytes_diffusionblocks: 23962436"]
