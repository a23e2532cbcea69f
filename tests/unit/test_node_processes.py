"""A private Ray node whose start is cut short (a stop inside ray.init) leaves no process
behind: the descendants the connection started are ended, those there before are not."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dbparallel.process_id import proc_stat

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc")

# a stand-in for the raylet: a child that starts a grandchild (its agent) and waits
TREE = """
import subprocess, sys, time
agent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
print(agent.pid, flush=True)
time.sleep(120)
"""


def _running(pid: int) -> bool:
    stat = proc_stat(pid)
    return bool(stat) and stat[0] not in ("Z", "X")


def _tree() -> tuple[subprocess.Popen, int]:
    child = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    return child, int(child.stdout.readline())


def test_the_new_descendants_are_ended_and_earlier_ones_kept() -> None:
    from dbparallel.runtime.node_processes import descendants, new_descendants, stop_processes

    before, before_agent = _tree()
    began = descendants()
    child, agent = _tree()
    try:
        assert {before.pid, before_agent} <= set(began)
        assert set(descendants()) - set(began) == {child.pid, agent}
        assert stop_processes(new_descendants(began)) == sorted([child.pid, agent])
        child.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _running(agent) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _running(agent)  # the grandchild too, though its parent is not this process
        assert before.poll() is None and _running(before_agent)  # there before: kept
    finally:
        for pid in (before_agent, agent):
            if _running(pid):
                os.kill(pid, 9)
        before.kill()
        before.wait()
        child.kill()
        child.wait()


def test_a_connection_cut_short_ends_the_processes_it_started(tmp_path: Path,
                                                             monkeypatch) -> None:
    import ray

    from dbparallel.config import load_config
    from dbparallel.runtime import ray_connect

    started: list[int] = []

    def init(*args, **kwargs):  # the node's processes start, then Ctrl-C lands
        child, agent = _tree()
        started.extend([child.pid, agent])
        raise KeyboardInterrupt

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "init", init)
    # as in a fresh process, whether or not the suite's own Ray instance is up in this one
    # (its tests may run in this process first): neither joined nor shut down here
    shut: list[int] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "shutdown", lambda: shut.append(1))
    cfg = load_config([Path(__file__).resolve().parents[2] / "jobs" / "tiny_cpu.yaml"],
                      [f"run.dir={tmp_path / 'run'}", "metrics.port=0"])
    with pytest.raises(KeyboardInterrupt):
        ray_connect.connect(cfg)
    deadline = time.monotonic() + 10
    while any(_running(p) for p in started) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(started) == 2 and not any(_running(p) for p in started)
    assert shut  # what ray.init had recorded of its node, if anything, is let go
