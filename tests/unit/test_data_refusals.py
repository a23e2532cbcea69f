"""What a resume on other data says: a bad row corrected in place after blocks saved
checkpoints, and other data of the same layout at another path (two folders of one name share
the default run.name), are told apart from a plain copy and given their way out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from dbparallel.cli import main
from dbparallel.data.tables import image_table

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "jobs" / "tiny_cpu.yaml")
ROWS, GROUP = 600, 50


def _write(path: Path, seed: int = 0, bad_row: int | None = None) -> Path:
    rng = np.random.default_rng(seed)
    images = (rng.integers(0, 256, (ROWS, 1, 8, 8)) / 255.0).astype(np.float32)
    labels = rng.integers(0, 10, ROWS)
    if bad_row is not None:
        labels[bad_row] = 12
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(image_table(images, labels), path, row_group_size=GROUP)
    return path


def _train(run_dir: Path, data: Path, *extra: str) -> int:
    return main(["train", TINY, "--local", f"run.dir={run_dir}", "data.source=parquet",
                 f"data.path={data}", "data.validate=false", "data.window_shards=1",
                 "train.steps=40", "train.checkpoint_every=5", "metrics.port=0", *extra])


def test_a_bad_row_corrected_after_checkpoints_is_told_how_to_go_on(tmp_path, capsys) -> None:
    data = _write(tmp_path / "d.parquet", bad_row=577)
    run_dir = tmp_path / "run"
    assert _train(run_dir, data) == 2
    assert "row 577" in capsys.readouterr().err
    manifest = json.loads((run_dir / "blocks" / "block_0" / "manifest.json").read_text())
    assert manifest["state"]  # a checkpoint before the bad row: the data stay pinned
    _write(data)  # the row corrected in place
    assert _train(run_dir, data) == 2
    err = capsys.readouterr().err
    assert "bad rows were corrected in place" in err
    assert f"delete {run_dir / 'data_index.json'}" in err
    (run_dir / "data_index.json").unlink()
    assert _train(run_dir, data) == 0
    report = json.loads((run_dir / "report.json").read_text())
    assert report["per_block"][0]["resumed_from"] > 0  # its checkpoints were kept


def test_other_data_at_another_path_names_where_the_run_was_trained(tmp_path, capsys) -> None:
    first = _write(tmp_path / "a" / "d.parquet")
    run_dir = tmp_path / "runs" / "d-dit"
    assert _train(run_dir, first.parent, "train.steps=5") == 0
    other = _write(tmp_path / "b" / "d.parquet", seed=1)  # same name and rows, other data
    assert _train(run_dir, other.parent, "train.steps=5") == 2
    err = capsys.readouterr().err
    assert f"trained on data at {first.parent} " in err
    assert "run.name" in err
