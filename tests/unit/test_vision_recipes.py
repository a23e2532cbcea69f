"""The tiny Fashion-MNIST recipes end to end in local mode (shortened, on a subset of the
real data set given as data.path) and their baselines."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pytest

from dbparallel import cli
from dbparallel.data import fashion
from dbparallel.training.eval import inception

ROOT = Path(__file__).resolve().parents[2]
SHORT = ["train.steps=16", "train.checkpoint_every=16", "train.log_every=8",
         "train.warmup_steps=4"]
pytestmark = pytest.mark.skipif(
    fashion.idx_files(fashion.PACKAGE_DIR) is None,
    reason="Debian package dataset-fashion-mnist is not installed "
           "(apt-get install dataset-fashion-mnist)")


def _fid_available() -> bool:
    try:
        inception.network_path()
    except Exception:
        return False
    return True


@pytest.fixture(scope="module")
def subset(tmp_path_factory) -> str:
    """2,000 training and 500 test rows of the real data set, as a Parquet data.path."""
    from dbparallel.data.splits import eval_rows, train_rows
    from dbparallel.data.tables import write_table

    table = fashion.fashion_table()
    path = tmp_path_factory.mktemp("fashion") / "subset.parquet"
    write_table(pa.concat_tables([train_rows(table).slice(0, 2000),
                                  eval_rows(table).slice(0, 500)]), str(path))
    return str(path)


def _run(command: str, recipe: str, run_dir: Path, subset: str, *extra: str) -> dict:
    args = [command, str(ROOT / "jobs" / recipe), f"run.dir={run_dir}", f"data.path={subset}",
            *SHORT, *extra]
    if command == "train":
        args.append("--local")
    assert cli.main(args) == 0
    return json.loads((run_dir / "report.json").read_text())


def test_vit_tiny_and_its_baseline(tmp_path, subset) -> None:
    report = _run("train", "vit_tiny.yaml", tmp_path / "db", subset)
    assert report["task"] == "vit" and report["blocks"] == 2
    assert [row["steps"] for row in report["per_block"]] == [16, 16]
    assert 0 <= report["assembly"]["accuracy"] <= 1
    assert report["assembly"]["eval_rows"] == 500  # the test split
    assert {row["heldout_split"] for row in report["per_block"]} == {"test"}
    confusion = json.loads((tmp_path / "db" / "confusion.json").read_text())
    assert sum(map(sum, confusion["confusion"])) == 500
    base = _run("baseline", "vit_tiny.yaml", tmp_path / "e2e", subset)
    assert base["blocks"] == 1 and len(base["per_block"]) == 1
    assert set(base) == set(report) and set(base["assembly"]) == set(report["assembly"])
    assert base["partition"] == [[0.002, 80.0]]


def test_dit_fashion_tiny_with_fid(tmp_path, subset) -> None:
    fid = _fid_available()
    report = _run("train", "dit_fashion_tiny.yaml", tmp_path / "db", subset, "sample.steps=4",
                  "sample.eval_samples=10", "sample.per_class=1", f"sample.fid={fid}",
                  "run.curves=false")  # curves.png of a dit run: test_train_ray
    metrics = report["assembly"]
    assert 0 <= metrics["sample_accuracy"] <= 1 and metrics["fd_indomain"] > 0
    assert metrics["classifier_accuracy"] > 0.5  # of the held-out test images
    if fid:
        assert metrics["fid"] > 0 and math.isfinite(metrics["kid"])
        assert metrics["fid_samples"] == 10
    assert (tmp_path / "db" / "samples.png").read_bytes()[:4] == b"\x89PNG"


def test_missing_fashion_stops_before_training(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(fashion, "PACKAGE_DIR", tmp_path / "absent")
    code = cli.main(["train", str(ROOT / "jobs" / "vit_tiny.yaml"), "--local",
                     f"run.dir={tmp_path / 'run'}"])
    assert code == cli.EXIT_USER_ERROR
    assert "apt-get install dataset-fashion-mnist" in capsys.readouterr().err
    assert not (tmp_path / "run" / "blocks").exists()
