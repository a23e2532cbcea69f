"""A Ray run's driver that waits for the cluster to place its blocks holds no lease yet, and
no block process names it: ``dbparallel stop`` finds it by its ``running/`` record
(training/running.py) and stops it there, and ``status`` names it as the run's driver."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import dbparallel
from dbparallel import cli
from dbparallel.training.running import RUNNING_DIR

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "jobs" / "tiny_cpu.yaml"
HANG_S = 300  # a hang guard only, never a timing claim
WAITING = "placement: the cluster has"  # the driver's line before it waits for placement


def test_a_driver_waiting_for_placement_is_stopped(ray_session, tmp_path: Path,
                                                   capsys) -> None:
    """The session's cluster has 2 CPUs and the run asks 4 for each block: named by its
    address (a cluster that may yet grow), it waits runtime.placement_timeout_s for room."""
    import ray

    run, out, err = tmp_path / "run", tmp_path / "stdout", tmp_path / "stderr"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dbparallel", "train", str(RECIPE), f"run.dir={run}",
             "metrics.port=0", "data.validate=false", "runtime.cpus_per_block=4",
             "runtime.placement_timeout_s=3600",
             f"runtime.address={ray.get_runtime_context().gcs_address}"],
            cwd=ROOT, stdout=stdout, stderr=stderr, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + HANG_S
        while WAITING not in out.read_text() and proc.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        assert WAITING in out.read_text(), (proc.poll(), err.read_text()[-3000:])
        status = dbparallel.status(run)
        code = cli.main(["stop", str(run), "--wait", str(HANG_S)])
        said = capsys.readouterr().out.splitlines()
        proc.wait(timeout=HANG_S)
    finally:
        proc.kill()
        proc.wait()
    host = socket.gethostname()
    assert (status.state, status.drivers, status.runners) == \
        ("2 not started", [f"{host}/{proc.pid}"], [])
    assert code == 0, (said, err.read_text()[-3000:])
    assert said == [f"the run: the Ray run whose driver is pid {proc.pid} on {host} runs it: "
                    f"SIGTERM sent to the driver",
                    f"waiting for pid {proc.pid} to stop (up to {HANG_S} s) ...",
                    "the run: stopped", "the same train command resumes the run"]
    assert proc.returncode == 143, err.read_text()[-3000:]
    assert err.read_text().strip().splitlines()[-1] == \
        "dbparallel: stopped (SIGTERM) (run the same command again to resume)"
    assert not (run / RUNNING_DIR).exists()  # its record removed, and the folder it made
    assert not list(run.glob("blocks/*/lease.json"))  # no block started
