"""`ray job submit` against a head started here runs jobs/tiny_cpu.yaml to success."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def head(tmp_path_factory):
    """A `ray start --head --block` cluster with token authentication, in its own process
    group, with the test's python first on PATH. Its token lives in a HOME of its own, where
    `ray job submit` finds it, as on a user's head node. Only that group is stopped afterwards:
    `ray stop` would end every Ray instance on the machine, the test session's own included.

    Every port is chosen free, the dashboard agent's HTTP port too: at its default (52365) it
    collides with any other Ray instance on the machine that runs a dashboard (the suite's own
    does), and the head then never gets a job agent ("No available agent to submit job")."""
    bin_dir = str(Path(sys.executable).parent)
    home = tmp_path_factory.mktemp("home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    env.update(PATH=bin_dir + os.pathsep + os.environ["PATH"], HOME=str(home),
               RAY_AUTH_MODE="token", RAY_USAGE_STATS_ENABLED="0")
    gcs, dash = _free_port(), _free_port()
    ray = str(Path(bin_dir) / "ray")
    # as the README says: a head with token auth needs a token before it starts
    subprocess.run([ray, "get-auth-token", "--generate"], env=env, check=True,
                   capture_output=True, timeout=60)
    temp = tempfile.mkdtemp(prefix="rayjob", dir="/tmp")  # short: Ray's socket paths are bounded
    proc = subprocess.Popen(
        [ray, "start", "--head", "--block", f"--port={gcs}", "--num-cpus=2",
         f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1", "--disable-usage-stats",
         f"--dashboard-agent-listen-port={_free_port()}",
         f"--temp-dir={temp}"],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(address + "/api/version", timeout=2)
                break
            except urllib.error.HTTPError:  # it answers (401 without the token): it is up
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the Ray head did not come up") from None
                time.sleep(0.2)
        yield ray, address, env
    finally:
        # a throwaway head, killed: on SIGTERM `ray start --block`, its GCS and its raylet
        # stay up (seen 20 s on), so waiting for them to stop would only add its timeout
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.parametrize("extra", [
    [],
    # each block a Ray Train group of two CPU workers (opt-in: Ray Train adds a minute)
    pytest.param(["runtime.replicas_per_block=2", "runtime.cpus_per_block=0.25"],
                 marks=pytest.mark.slow, id="replicas"),
], ids=lambda extra: "actors" if not extra else "replicas")
def test_job_submit_runs_tiny_recipe(head, tmp_path, extra) -> None:
    ray, address, env = head
    run_dir = tmp_path / "run"
    deadline = time.monotonic() + 180
    while True:  # the head's job agent comes up after its dashboard: ask until it answers
        result = subprocess.run(
            [ray, "job", "submit", "--address", address, "--working-dir", str(ROOT), "--",
             "python", "-m", "dbparallel", "train", "jobs/tiny_cpu.yaml", f"run.dir={run_dir}",
             *extra],
            env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
        not_ready = "No available agent to submit job" in result.stdout + result.stderr
        if not (result.returncode and not_ready and time.monotonic() < deadline):
            break
        time.sleep(3)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "succeeded" in result.stdout
    report = json.loads((run_dir / "report.json").read_text())
    assert [row["steps"] for row in report["per_block"]] == [12, 12]
    assert [row["replicas"] for row in report["per_block"]] == ([2, 2] if extra else [1, 1])
    # the driver names where the cluster's node exports the blocks' metrics, and it does
    line = next((x for x in result.stdout.splitlines() if x.startswith("metrics: ")), "")
    url = line.rpartition(": ")[2]
    assert url.startswith("http://") and url.endswith("/metrics"), result.stdout[-3000:]
    deadline = time.monotonic() + 120  # Ray's nodes report their metrics every few seconds
    while 'ray_dbparallel_block_steps_total{' not in (text := _scrape(url)):
        assert time.monotonic() < deadline, text[-2000:]
        time.sleep(2)


def _scrape(url: str) -> str:
    try:
        return urllib.request.urlopen(url, timeout=10).read().decode()
    except OSError as err:
        return str(err)
