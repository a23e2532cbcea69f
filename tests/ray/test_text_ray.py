"""A tiny text recipe on a real local Ray instance: the shared text table reaches every block
actor and the assembler, and the result equals local mode bit for bit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dbparallel.config import load_config

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[2]
FAST = ["train.steps=4", "train.checkpoint_every=4", "train.log_every=2", "metrics.port=0",
        "sample.eval_samples=10", "sample.steps=4", "sample.text_samples=2"]


@pytest.mark.slow  # the actors run test_train_ray's code; text tasks by default: test_text_recipes
def test_mdm_in_ray_equals_local(ray_session, tmp_path: Path) -> None:
    from dbparallel.runtime.launch import run_ray
    from dbparallel.runtime.local import run_local

    recipe = ROOT / "jobs" / "mdm_shakespeare_tiny.yaml"
    reports = {}
    for mode in ("ray", "local"):
        cfg = load_config([recipe], [f"run.dir={tmp_path / mode}", *FAST])
        run = run_ray if mode == "ray" else run_local
        reports[mode] = run(cfg, None, progress=False)
    losses = {m: [row["final_loss"] for row in r["per_block"]] for m, r in reports.items()}
    assert losses["ray"] == losses["local"]
    assert reports["ray"]["assembly"] == reports["local"]["assembly"]
    for b in range(2):
        name = f"blocks/block_{b}/snapshot_00000004.pt"
        a = torch.load(tmp_path / "ray" / name, weights_only=True)["ema"]
        c = torch.load(tmp_path / "local" / name, weights_only=True)["ema"]
        assert all(torch.equal(a[k], c[k]) for k in a)
    assert (tmp_path / "ray" / "samples.txt").read_text(encoding="utf-8").startswith("mdm")
