"""``--local --block`` processes that start one new run directory at once: the one that writes
config.yaml second finds it there, whenever it appears after the first looked for it, and
resumes against it as any rerun does (refused where its network differs), never refused for
the other's files nor writing over its config.yaml. The other process is simulated: its
config.yaml is written between this one's checks (a patched step of ``open_run``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbparallel.config import CONFIG_FILE, dump_yaml, load_config
from dbparallel.errors import RunDirError
from dbparallel.training import checkpoint, run_dir
from dbparallel.training.run_dir import open_run
from dbparallel.training.run_files import stored_config

TINY = str(Path(__file__).resolve().parents[2] / "jobs" / "tiny_cpu.yaml")


def _other_starts(run: Path, hidden: int):
    """Write the config.yaml of another process's new run of ``run`` (model.hidden=``hidden``),
    as that process would, then go on as before."""
    other = load_config([TINY], [f"run.dir={run}", f"model.hidden={hidden}"])

    def start() -> None:
        run.mkdir(parents=True, exist_ok=True)
        (run / CONFIG_FILE).write_text(dump_yaml(other))
        (run / "run_id.txt").write_text("0123456789ab\n")
    return start


def test_a_run_started_after_the_look_at_the_directory_is_resumed(tmp_path: Path,
                                                                   monkeypatch) -> None:
    run = tmp_path / "run"
    start = _other_starts(run, 32)

    def any_checkpoint(storage) -> bool:
        start()  # the other process writes its files before this one lists the directory
        return False
    monkeypatch.setattr(checkpoint, "any_checkpoint", any_checkpoint)
    open_run(load_config([TINY], [f"run.dir={run}", "train.lr=0.01"]), [1])
    assert stored_config(run_dir.reach(str(run), "run.dir"))["train"]["lr"] == 0.01


def test_another_network_started_after_the_look_is_refused(tmp_path: Path,
                                                           monkeypatch) -> None:
    run = tmp_path / "run"
    monkeypatch.setattr(run_dir, "_tell_earlier_default", lambda cfg: _other_starts(run, 64)())
    with pytest.raises(RunDirError, match=r"model\.hidden: 64 there, 32 now"):
        open_run(load_config([TINY], [f"run.dir={run}"]), [1])
    assert stored_config(run_dir.reach(str(run), "run.dir"))["model"]["hidden"] == 64
