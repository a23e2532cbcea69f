"""The ViT task through a real local Ray instance: same blocks and accuracy as local mode."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dbparallel.config import load_config

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[2]
VIT = ["task=vit", "model.patch_size=2", "train.steps=12", "train.checkpoint_every=12"]


def _train(run_dir: Path, local: bool) -> dict:
    # the tiny recipe's sizes and cadence, on the embedded digits
    cfg = load_config([ROOT / "jobs" / "tiny_cpu.yaml"], [f"run.dir={run_dir}", *VIT])
    if local:
        from dbparallel.runtime.local import run_local

        return run_local(cfg, None, progress=False)
    from dbparallel.runtime.launch import run_ray

    return run_ray(cfg, None, progress=False)


@pytest.mark.slow  # the vision default on Ray: test_block_steps_in_ray_equal_local
def test_vit_in_ray_equals_local(ray_session, tmp_path) -> None:
    ray_report = _train(tmp_path / "ray", local=False)
    local_report = _train(tmp_path / "local", local=True)
    assert ray_report["task"] == "vit" and ray_report["blocks"] == 2
    assert 0 <= ray_report["assembly"]["accuracy"] <= 1
    assert ray_report["assembly"]["accuracy"] == local_report["assembly"]["accuracy"]
    assert [r["final_loss"] for r in ray_report["per_block"]] == \
        [r["final_loss"] for r in local_report["per_block"]]
    for b in range(2):
        name = f"blocks/block_{b}/snapshot_00000012.pt"
        a = torch.load(tmp_path / "ray" / name, weights_only=True)["ema"]
        c = torch.load(tmp_path / "local" / name, weights_only=True)["ema"]
        assert all(torch.equal(a[k], c[k]) for k in a)
    assert (tmp_path / "ray" / "confusion.json").is_file()


def test_block_steps_in_ray_equal_local(ray_session, tmp_path) -> None:
    extra = ["train.block_steps=[12,4]", "noise.partition=log_uniform"]
    reports = {}
    for mode in ("ray", "local"):
        cfg = load_config([ROOT / "jobs" / "tiny_cpu.yaml"],
                          [f"run.dir={tmp_path / mode}", *VIT, *extra])
        if mode == "local":
            from dbparallel.runtime.local import run_local

            reports[mode] = run_local(cfg, None, progress=False)
        else:
            from dbparallel.runtime.launch import run_ray

            reports[mode] = run_ray(cfg, None, progress=False)
    for report in reports.values():
        assert [r["steps"] for r in report["per_block"]] == [12, 4]
    assert reports["ray"]["assembly"]["accuracy"] == reports["local"]["assembly"]["accuracy"]
    for b, step in ((0, 12), (1, 4)):
        name = f"blocks/block_{b}/snapshot_{step:08d}.pt"
        a = torch.load(tmp_path / "ray" / name, weights_only=True)["ema"]
        c = torch.load(tmp_path / "local" / name, weights_only=True)["ema"]
        assert all(torch.equal(a[k], c[k]) for k in a)
