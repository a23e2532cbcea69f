"""The streamed data path on a real local Ray instance: a bad row met mid-stream by a block
actor, and data larger than the instance's object store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dbparallel.config import load_config
from dbparallel.errors import DataError

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "jobs" / "tiny_cpu.yaml"


def _images(path: Path, rows: int, size: int, channels: int, bad_label_at: int = -1) -> Path:
    """Random uint8 images in row groups of 512 rows, several files."""
    rng = np.random.default_rng(0)
    pixels = channels * size * size
    path.mkdir(parents=True, exist_ok=True)
    per_file = 4096
    for i, start in enumerate(range(0, rows, per_file)):
        n = min(per_file, rows - start)
        labels = rng.integers(0, 10, n)
        if start <= bad_label_at < start + n:
            labels[bad_label_at - start] = 12
        table = pa.table({
            "image": pa.FixedSizeListArray.from_arrays(
                pa.array(rng.integers(0, 256, n * pixels, dtype=np.uint8)), pixels),
            "label": pa.array(labels)})
        pq.write_table(table, path / f"part-{i:05d}.parquet", row_group_size=512)
    return path


def _first_step_of(row: int, block: int) -> int:
    """The step at which ``block`` meets ``row`` (3000 rows in row groups of 512, batch 32,
    windows of one shard)."""
    from dbparallel.training.data_order import DataOrder

    order = DataOrder([512] * 5 + [440], 32, 0, block, 1)
    for step in range(94):
        for seg in order.segments(step):
            (shard,) = order.shards_of(seg.epoch, seg.window)
            if shard * 512 + seg.rows.min() <= row and row in set(shard * 512 + seg.rows):
                return step
    raise AssertionError(row)


@pytest.mark.parametrize("extra", [
    [],
    # met by one replica of a block's Ray Train group (opt-in: Ray Train adds a minute)
    pytest.param(["runtime.replicas_per_block=2", "runtime.cpus_per_block=0.25"],
                 marks=pytest.mark.slow, id="replicas"),
], ids=lambda extra: "actors" if not extra else "replicas")
def test_a_bad_row_met_by_a_block_actor_stops_the_run_naming_it(ray_session, tmp_path,
                                                                 extra, caplog) -> None:
    from dbparallel.runtime.launch import run_ray

    # a row both blocks meet after their checkpoint of step 10, whichever meets it first
    bad = next(r for r in range(0, 3000, 7) if min(_first_step_of(r, b) for b in (0, 1)) > 12)
    data = _images(tmp_path / "data", 3000, 8, 1, bad_label_at=bad)
    run_dir = tmp_path / "run"
    cfg = load_config([RECIPE], [f"run.dir={run_dir}", "data.source=parquet",
                                 f"data.path={data}", "data.validate=false", "train.steps=200",
                                 "train.checkpoint_every=10", "data.window_shards=1", *extra])
    with pytest.raises(DataError, match=rf"part-00000.parquet row {bad}: column 'label' has "
                                        r"label 12"):
        run_ray(cfg, None, progress=False)
    # raised for the caller to say (the CLI's one line), not logged as well
    assert not [r for r in caplog.records if "label 12" in r.getMessage()]
    kept = 0
    for block in (0, 1):  # every block keeps what it trained: each listed file is there
        path = run_dir / "blocks" / f"block_{block}" / "manifest.json"
        manifest = json.loads(path.read_text()) if path.exists() else {}
        for entry in [e for kind in ("state", "snapshot") for e in manifest.get(kind, [])]:
            assert (run_dir / entry["file"]).is_file()
        kept += len(manifest.get("state", []))
    assert kept  # the block that met the row had checkpointed step 10
    import dbparallel  # `dbparallel status` tells which block failed on which row, later

    failed = [b for b in dbparallel.status(run_dir).blocks if b.state == "failed"]
    assert failed and all(f"row {bad}: column 'label' has label 12" in b.failure
                          and b.failed_step and b.failed_step > 10 for b in failed)


# a Ray instance of its own and 108 MB of images; streaming by default: test_streaming and
# test_data_memory
@pytest.mark.slow
def test_data_larger_than_the_object_store_trains(tmp_path) -> None:
    """A private instance (its own process) with an 80 MiB object store; 108 MB of images."""
    data = _images(tmp_path / "data", 36_000, 32, 3)
    assert sum(f.stat().st_size for f in data.iterdir()) > 80 * 2**20
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "dbparallel", "train", str(RECIPE), f"run.dir={run_dir}",
         "data.source=parquet", f"data.path={data}", "data.image_size=32", "data.channels=3",
         "model.patch_size=8", "runtime.object_store_memory=83886080", "runtime.num_cpus=2",
         "train.steps=8", "sample.eval_samples=10"],
        env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    # block actors are created from (config, block, session) only: nothing of theirs lives in
    # the object store, where a lost node could take it and make their restart fail
    assert "constructor arguments in the object store" not in result.stderr
    report = json.loads((run_dir / "report.json").read_text())
    assert [r["steps"] for r in report["per_block"]] == [8, 8]
    assert report["assembly"]["classifier_accuracy"] >= 0  # evaluated on the streamed rows
