"""A Ray run keeps its assembly actor, whose gauges hold the final scores, for
metrics.linger_s after report.json is written: the node's metrics port serves them then."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

import pytest

from dbparallel.config import load_config

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[2]
HANG_S = 60  # a hang guard only
FAST = ["train.steps=2", "train.warmup_steps=0", "sample.eval_samples=10", "sample.per_class=1",
        "sample.steps=2", "run.curves=false"]


def _scraped(port: int, run_id: str) -> list[str]:
    """The values of the run's final sample_accuracy gauge on the node's metrics port."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return re.findall(rf'^ray_dbparallel_assembly_sample_accuracy\{{[^}}]*run_id="{run_id}"'
                      rf'[^}}]*\}} (\S+)$', text, re.M)


def _until_scraped(port: int, run_id: str) -> list[str]:
    """``_scraped`` once it holds a value (Ray exports every second here), or after HANG_S."""
    deadline = time.monotonic() + HANG_S
    while not (values := _scraped(port, run_id)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return values


def test_the_final_scores_are_exported_after_the_report(ray_session, tmp_path, monkeypatch):
    import dbparallel.runtime.launch as launch
    from dbparallel.runtime.ray_backend import RayBackend

    run = tmp_path / "run"
    seen: dict = {}
    # the blocks' placement group (the assembly actor has no bundle in it here) is freed
    # before the wait, the assembly actor stopped after it
    order: list[str] = []
    stop_assembler, release = RayBackend.close_assembler, launch.release
    monkeypatch.setattr(RayBackend, "close_assembler",
                        lambda self: (order.append("assembler stopped"), stop_assembler(self)))
    monkeypatch.setattr(launch, "release", lambda pg: (order.append("freed"), release(pg)))

    def scrape(seconds: float, where: str) -> bool:  # the wait, while it serves the scores
        seen["seconds"] = seconds
        order.append("linger")
        report = json.loads((run / "report.json").read_text())  # written before it
        seen["values"] = _until_scraped(ray_session["metrics_port"], report["run_id"])
        return True

    monkeypatch.setattr(launch, "linger", scrape)
    cfg = load_config([ROOT / "jobs" / "tiny_cpu.yaml"],
                      [f"run.dir={run}", "metrics.linger_s=600", *FAST])
    report = launch.run_ray(cfg, None, progress=False)
    assert seen["seconds"] == 600
    assert order == ["freed", "linger", "assembler stopped"]
    assert [float(v) for v in seen["values"]] == [
        pytest.approx(report["assembly"]["sample_accuracy"])]


def test_a_stop_during_the_wait_ends_the_run_as_done(ray_session, tmp_path, capsys) -> None:
    """`dbparallel stop` of a Ray run's driver that serves its final scores: the driver ends
    at once, exit 0, its report kept, its assembly actor and record gone."""
    import os
    import subprocess
    import sys

    import ray

    from dbparallel import cli
    from dbparallel.training.running import RUNNING_DIR

    run, out, err = tmp_path / "run", tmp_path / "stdout", tmp_path / "stderr"
    served = "metrics: the final scores stay served by Ray's metrics export for 600 s"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dbparallel", "train", str(ROOT / "jobs" / "tiny_cpu.yaml"),
             f"run.dir={run}", "metrics.linger_s=600", *FAST,
             f"runtime.address={ray.get_runtime_context().gcs_address}"],
            cwd=ROOT, stdout=stdout, stderr=stderr, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 300  # a hang guard only
        while served not in out.read_text() and proc.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        assert served in out.read_text(), (proc.poll(), err.read_text()[-3000:])
        report = json.loads((run / "report.json").read_text())
        assert _until_scraped(ray_session["metrics_port"], report["run_id"])  # its actor lives
        code = cli.main(["stop", str(run), "--wait", "300"])
        said = capsys.readouterr().out
        proc.wait(timeout=300)
    finally:
        proc.kill()
        proc.wait()
    assert code == 0 and "SIGTERM sent to the driver" in said, said
    assert proc.returncode == 0, err.read_text()[-3000:]
    assert "metrics: stopped serving the final scores; the run is done" in out.read_text()
    assert "stopped (SIGTERM)" not in err.read_text()
    assert json.loads((run / "report.json").read_text()) == report
    assert not list((run / RUNNING_DIR).glob("*.json"))
    here = ray.get_runtime_context().gcs_address  # not whichever instance started last
    alive = [a for a in ray.util.state.list_actors(address=here,
                                                   filters=[("state", "=", "ALIVE")])
             if a.class_name == "AssemblerActor"]
    assert not alive  # stopped with the run
