"""``dbparallel predict`` on a run trained from an image folder prints the class folder's name:
labels are the folders' names sorted as text (folders 0..10: folder "2" is label 3)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

import dbparallel
from dbparallel import cli
from dbparallel.config import load_config
from dbparallel.runtime.local import run_local
from dbparallel.training.data_pin import pinned_data
from dbparallel.training.storage import Storage

ROOT = Path(__file__).resolve().parents[2]
NAMES = [str(k) for k in range(11)]


def test_predict_prints_class_folder_names_of_an_image_folder_run(tmp_path: Path, capsys,
                                                                  monkeypatch) -> None:
    monkeypatch.setenv("DBPARALLEL_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    for name in NAMES:
        (tmp_path / "data" / name).mkdir(parents=True)
        for n in range(2):
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(
                tmp_path / "data" / name / f"{n}.png")
    cfg = load_config([ROOT / "jobs" / "tiny_cpu.yaml"], [
        "task=vit", "model.patch_size=4", "train.steps=2", "train.checkpoint_every=2",
        "metrics.port=0", "data.source=image_folder", f"data.path={tmp_path / 'data'}",
        "data.num_classes=11", "data.image_size=8", "data.channels=1",
        f"run.dir={tmp_path / 'run'}"])
    run_local(cfg, None, progress=False, only_blocks=list(range(cfg.model.blocks)))
    run = str(tmp_path / "run")
    classes = pinned_data(Storage(run)).meta["classes"]
    assert classes == ["0", "1", "10", "2", "3", "4", "5", "6", "7", "8", "9"]  # as text

    images = sorted((tmp_path / "data").rglob("*.png"))
    pixels = torch.from_numpy(np.stack([np.asarray(Image.open(p)) for p in images]))[:, None]
    labels = dbparallel.load(run).predict(pixels).argmax(dim=1).tolist()
    assert cli.main(["predict", run, str(tmp_path / "data"), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["class"] for r in rows] == labels
    assert [r["name"] for r in rows] == [classes[k] for k in labels]
    assert cli.main(["predict", run, str(images[0])]) == 0
    assert capsys.readouterr().out.split("\t")[1] == classes[labels[0]]
    assert dbparallel.load(run).class_names == classes

    # an export keeps them: predict on the file alone names the classes as well
    export = str(tmp_path / "vit.safetensors")
    assert cli.main(["export", run, "--out", export]) == 0
    capsys.readouterr()
    assert dbparallel.load(export).class_names == classes
    assert cli.main(["predict", export, str(tmp_path / "data"), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["name"] for r in rows] == [classes[k] for k in labels]

    # a table whose images are in a column of its own name is told the name predict reads
    table = tmp_path / "mine.parquet"
    pq.write_table(pa.table({"picture": [np.zeros(64, np.uint8).tolist()]}), table)
    assert cli.main(["predict", export, str(table)]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "column 'image' is missing; the table has ['picture']: rename the column that holds "
        "the images (pixels, or PNG/JPEG bytes) to 'image'")
