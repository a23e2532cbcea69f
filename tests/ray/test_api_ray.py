"""dbparallel.train on Ray: the blocks train as actors in the Ray instance this process is
connected to, with the weights local mode gives."""

from __future__ import annotations

from pathlib import Path

import pytest

import dbparallel

pytestmark = pytest.mark.ray
TINY = Path(__file__).resolve().parents[2] / "jobs" / "tiny_cpu.yaml"


@pytest.mark.slow  # train() on Ray is run_ray (test_train_ray); the API by default: test_api
def test_train_from_python_on_ray_matches_local_mode(ray_session, tmp_path) -> None:
    overrides = {"train.steps": 6, "metrics.port": 0}
    on_ray = dbparallel.train(TINY, overrides={**overrides, "run.dir": tmp_path / "ray"},
                              progress=False)
    here = dbparallel.train(TINY, overrides={**overrides, "run.dir": tmp_path / "local"},
                            local=True, progress=False)
    assert [r["steps"] for r in on_ray["per_block"]] == [6, 6]
    assert [r["final_loss"] for r in on_ray["per_block"]] == \
        [r["final_loss"] for r in here["per_block"]]
    assert on_ray["assembly"] == here["assembly"]
