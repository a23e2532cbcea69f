"""What a caller of the Python API is told about an argument it gets wrong: the argument named
in a UserError, before anything is written or computed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import dbparallel
from dbparallel import cli
from dbparallel.config import load_config
from dbparallel.errors import UserError
from dbparallel.runtime.local import run_local

ROOT = Path(__file__).resolve().parents[2]
FAST = ["train.steps=3", "train.checkpoint_every=3", "train.log_every=1", "metrics.port=0"]


def _train(run_dir: Path, *overrides: str) -> str:
    cfg = load_config([ROOT / "jobs" / "tiny_cpu.yaml"], [*overrides, *FAST,
                                                           f"run.dir={run_dir}"])
    run_local(cfg, None, progress=False, only_blocks=list(range(cfg.model.blocks)))
    return str(run_dir)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("runs")
    return {"dit": _train(base / "dit"),
            "vit": _train(base / "vit", "task=vit", "model.patch_size=4")}


def test_export_refuses_a_folder_or_a_file_of_a_run_directory(runs: dict[str, str],
                                                              tmp_path: Path, capsys) -> None:
    run = Path(runs["dit"])
    config = (run / "config.yaml").read_bytes()
    for out, said in ((tmp_path, f"out {tmp_path}: is a folder; name a file"),
                      (run / "config.yaml", "which writing would replace"),
                      (run / "report.json", "which writing would replace"),
                      ("", "out: give the path of the file to write")):
        if out == run / "report.json":
            out.write_text("{}")
        with pytest.raises(UserError, match=re.escape(said)):
            dbparallel.export(run, out)
    assert (run / "config.yaml").read_bytes() == config  # the run is untouched
    assert dbparallel.load(run).steps == [3, 3]
    assert cli.main(["export", str(run), "--out", str(tmp_path)]) == 2
    assert f"--out {tmp_path}: is a folder" in capsys.readouterr().err
    written = run / "net.safetensors"  # another file in a run directory: allowed
    dbparallel.export(run, written)
    assert dbparallel.load(written).steps == [3, 3]
