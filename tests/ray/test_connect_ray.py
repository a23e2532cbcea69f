"""A private instance for blocks with replicas answers Ray's state API itself, whatever
cluster an earlier `ray start` on the machine recorded: Ray Train's placement-group cleaner
asks that API about its controller all along a group's training."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import os, sys, ray
from dbparallel.config import load_config
from dbparallel.runtime.ray_connect import connect
connect(load_config([sys.argv[1]], ["runtime.num_cpus=1", "runtime.replicas_per_block=2",
                                     "metrics.port=0"]))
print("driver", os.environ.get("RAY_API_SERVER_ADDRESS", "unset"), flush=True)

@ray.remote(num_cpus=0)
class Probe:
    def state(self):  # what the cleaner asks: is this actor alive (no address given)
        from ray.util.state import get_actor
        try:
            return get_actor(ray.get_runtime_context().get_actor_id(), timeout=10).state
        except Exception as err:
            return f"{type(err).__name__}: {err}"

print("state", ray.get(Probe.remote().state.remote(), timeout=120), flush=True)
ray.shutdown()
"""


@pytest.mark.slow  # two Ray instances of its own
def test_the_state_api_answers_from_this_instance_not_a_stale_ray_start() -> None:
    with socket.socket() as s:  # a port nothing listens on: a head that is gone
        s.bind(("127.0.0.1", 0))
        gone = s.getsockname()[1]
    temp = tempfile.mkdtemp(prefix="r", dir="/tmp")  # short: Ray's socket paths live here
    (Path(temp) / "ray").mkdir()
    (Path(temp) / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{gone}")
    env = {**os.environ, "RAY_TMPDIR": temp, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_API_SERVER_ADDRESS", None)
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(ROOT / "jobs" / "tiny_cpu.yaml")],
                         env=env, capture_output=True, text=True, timeout=240)
    assert "state ALIVE" in out.stdout, out.stdout + out.stderr[-3000:]
    # the Ray processes have the variable, the driver not: its own clients reach what they name
    assert "driver unset" in out.stdout


RETRY = """
import contextlib, os, socket, sys, ray
from dbparallel.config import load_config
from dbparallel.runtime import ray_connect
real, held = ray_connect.state_api_here, []

@contextlib.contextmanager
def taken_once():  # the first free port is taken by someone else before Ray binds it
    with real() as port:
        if not held:
            s = socket.socket(); s.bind(("127.0.0.1", port)); s.listen(); held.append(s)
        yield port

ray_connect.state_api_here = taken_once
ray_connect.connect(load_config([sys.argv[1]], ["runtime.num_cpus=1",
                                            "runtime.replicas_per_block=2", "metrics.port=0"]))
print("connected", ray.is_initialized() and len(held) == 1, flush=True)  # on the next port
ray.shutdown()
"""


@pytest.mark.slow  # a Ray instance of its own
def test_a_dashboard_port_taken_before_ray_binds_it_is_replaced() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_API_SERVER_ADDRESS", None)
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run([sys.executable, "-c", RETRY, str(ROOT / "jobs" / "tiny_cpu.yaml")],
                         env=env, capture_output=True, text=True, timeout=240)
    assert "connected True" in out.stdout, out.stdout + out.stderr[-3000:]


JOIN = """
import sys
from dbparallel.config import load_config
from dbparallel.runtime.ray_connect import connect
connect(load_config([sys.argv[1]], [f"runtime.address={sys.argv[2]}",
                                    "runtime.replicas_per_block=2"]))
print("joined", flush=True)
"""


@pytest.mark.slow  # a `ray start` head of its own
def test_blocks_with_replicas_on_a_cluster_without_dashboard_are_warned(tmp_path) -> None:
    """Ray Train watches each block's group through the state API the dashboard serves: on a
    head started with --include-dashboard=false it logs a failed query all along."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        gcs = s.getsockname()[1]
    temp = tempfile.mkdtemp(prefix="r", dir="/tmp")  # short: Ray's socket paths live here
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_ADDRESS", "RAY_API", "RAY_AUTH"))}
    env.update(PYTHONPATH=str(ROOT), RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token",
               HOME=str(tmp_path))  # a token of its own, as on a user's head node
    ray = str(Path(sys.executable).parent / "ray")
    subprocess.run([ray, "get-auth-token", "--generate"], env=env, check=True,
                   capture_output=True, timeout=60)
    head = subprocess.Popen(
        [ray, "start", "--head", "--block", f"--port={gcs}", "--num-cpus=1",
         "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        out = subprocess.run(
            [sys.executable, "-c", JOIN, str(ROOT / "jobs" / "tiny_cpu.yaml"),
             f"127.0.0.1:{gcs}"], env=env, capture_output=True, text=True, timeout=240)
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # this head's group only, never `ray stop`
        try:
            head.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=30)
    assert "joined" in out.stdout, out.stdout + out.stderr[-3000:]
    assert ("runtime.replicas_per_block=2: the cluster at 127.0.0.1:" in out.stderr
            and "runs no dashboard" in out.stderr
            and "without --include-dashboard=false" in out.stderr), out.stderr[-3000:]


CUT_SHORT = """
import os, sys
import ray
import ray._private.worker as worker
import dbparallel

def interrupted(*args, **kwargs):  # Ctrl-C once the private instance's processes started
    raise KeyboardInterrupt()

worker.connect = interrupted
try:
    dbparallel.train(sys.argv[1], overrides={"run.dir": sys.argv[2], "metrics.port": 0,
                     "data.validate": False}, progress=False)
except KeyboardInterrupt:
    print("interrupted", flush=True)
mine = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\\0", b" ").decode()
    except OSError:
        continue
    if int(stat[1]) == os.getpid() and stat[0] != "Z":  # a child still running
        mine.append(cmd[:120])
print("children", mine, flush=True)
"""


@pytest.mark.slow  # a Ray instance of its own
def test_a_private_instance_cut_short_as_it_starts_is_stopped(tmp_path) -> None:
    """Ctrl-C while ``train`` connects to the private instance it started (its processes
    started, the driver not connected yet) used to leave those processes running, children
    of the program, for as long as it ran: the interrupt stops them before it is raised.
    (Earlier, while ray.init still starts the node, Ray keeps no handle to stop them.)"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run([sys.executable, "-c", CUT_SHORT, str(ROOT / "jobs" / "tiny_cpu.yaml"),
                          str(tmp_path / "run")], env=env, capture_output=True, text=True,
                         timeout=240)
    assert "interrupted" in out.stdout, out.stdout + out.stderr[-3000:]
    assert "children []" in out.stdout, out.stdout + out.stderr[-3000:]


def test_a_runtime_address_of_another_instance_than_the_joined_one_is_warned(
        ray_session, caplog) -> None:
    """A process that joined a Ray instance runs there (docs/api.md); a runtime.address naming
    another instance (another port, a host elsewhere) is warned of, naming both, and the same
    one (its address, this machine's loopback with its port, auto) is not."""
    import logging

    import ray

    from dbparallel.config import load_config
    from dbparallel.runtime.ray_connect import connect

    joined = ray.get_runtime_context().gcs_address
    port = int(joined.rpartition(":")[2])
    with socket.socket() as s:  # a port no instance listens on
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    elsewhere = next(ip for ip in ("198.51.100.1", "198.51.100.2")  # not this machine
                     if ip != joined.rpartition(":")[0])
    others = [f"{joined.rpartition(':')[0]}:{free}", f"{elsewhere}:{port}"]
    same = [joined, f"127.0.0.1:{port}", f"localhost:{port}", "auto"]
    for address, warned in [*((a, True) for a in others), *((a, False) for a in same)]:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="dbparallel.runtime.ray_connect"):
            assert connect(load_config(overrides=[f"runtime.address={address}"])) is False
        said = [r.getMessage() for r in caplog.records]
        assert bool(said) == warned, (address, said)
        if warned:
            assert said[0].startswith(f"runtime.address={address} is not joined: this "
                                      f"process joined the Ray instance at {joined} before, "
                                      f"and the run uses that one"), said
    assert ray.is_initialized() and ray.get_runtime_context().gcs_address == joined
