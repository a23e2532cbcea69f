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


def test_relative_paths_are_the_driver_s_on_a_cluster_it_joined(ray_session, tmp_path,
                                                                 monkeypatch) -> None:
    """A cluster's block processes work in their node's working directory (here the one this
    test session started Ray in, as a `ray start` head's is where it ran): a driver's relative
    run.dir and data.path are its own, made absolute before they are handed on. The blocks
    used to write into, and look for the data in, a directory of that name under theirs."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    images = np.random.default_rng(0).integers(0, 256, (200, 64), dtype=np.uint8)
    (tmp_path / "data").mkdir()
    pq.write_table(pa.table({"image": pa.array(list(images), type=pa.list_(pa.uint8())),
                             "label": np.arange(200) % 10}), tmp_path / "data" / "train.parquet")
    monkeypatch.chdir(tmp_path)  # after Ray started elsewhere
    report = dbparallel.train(TINY, overrides={
        "run.dir": "runs/rel", "data.source": "parquet", "data.path": "data",
        "train.steps": 2, "data.validate": False, "metrics.port": 0}, progress=False)
    assert [r["steps"] for r in report["per_block"]] == [2, 2]
    assert dbparallel.status(tmp_path / "runs" / "rel").state == "finished"
