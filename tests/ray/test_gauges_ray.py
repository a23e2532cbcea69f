"""A gauge a Ray process sets once stays on its node's metrics port while the process lives."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[2]


def _sigma_blocks(port: int, run: str = "gauges", worker: str | None = None) -> set[str]:
    """The blocks of run ``run`` whose sigma_low gauge the node's metrics port serves (set by
    the process of WorkerId ``worker``, if given)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    lines = re.findall(r'^ray_dbparallel_block_sigma_low\{[^}]*\}', text, re.M)
    return {re.search(r'block="(\d+)"', line)[1] for line in lines
            if f'run="{run}"' in line and (worker is None or f'WorkerId="{worker}"' in line)}


def _until(port: int, want: set[str], timeout_s: float = 60, **which: str) -> set[str]:
    deadline = time.monotonic() + timeout_s  # a guard only
    while (seen := _sigma_blocks(port, **which)) != want and time.monotonic() < deadline:
        time.sleep(0.2)
    return seen


def test_a_gauge_set_once_is_exported_until_it_is_dropped(ray_session) -> None:
    """Ray 2.60 forgets a gauge not set again within two export intervals: a block's sigma
    range, set once as its actor starts, used to vanish from the scrape a few seconds later
    (20 s on a default `ray start`) while the block trained on."""
    import ray

    from dbparallel.runtime.metric_specs import SPEC
    from dbparallel.runtime.metrics import BlockRecorder, RaySink

    @ray.remote(num_cpus=0)
    class Blocks:
        def __init__(self) -> None:
            self.sinks = [RaySink(), RaySink()]
            for b, sink in enumerate(self.sinks):
                BlockRecorder("gauges", "0123456789ab", b, (0.1, 1.0), sink)

        def drop(self, block: int) -> None:
            spec = SPEC["dbparallel_block_sigma_low"]
            self.sinks[block].drop(spec, {"run": "gauges", "run_id": "0123456789ab",
                                          "block": str(block)})

    blocks = Blocks.remote()
    port = ray_session["metrics_port"]
    try:
        assert _until(port, {"0", "1"}) == {"0", "1"}
        ray.get(blocks.drop.remote(1), timeout=60)
        # block 1's gauge, no longer set, ages out of the scrape; block 0's, set once as
        # block 1's was, is still there, also past the age that took block 1's (2 s here)
        assert _until(port, {"0"}) == {"0"}
        time.sleep(3)
        assert _sigma_blocks(port) == {"0"}
    finally:
        ray.kill(blocks)


REJOIN = """
import sys, threading, time, ray
from dbparallel.runtime.metric_specs import SPEC
from dbparallel.runtime.metrics import RaySink
spec, sink = SPEC["dbparallel_block_sigma_low"], RaySink()
tags = lambda b: {"run": "rejoined", "run_id": "0123456789ab", "block": str(b)}
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
sink.set(spec, 0.1, tags(0))
ray.shutdown()
deadline = time.monotonic() + 60  # a guard only: the sink's thread sees Ray gone and ends
while any(t.name == "dbparallel-gauges" for t in threading.enumerate()):
    assert time.monotonic() < deadline, "the gauge thread outlived Ray"
    time.sleep(0.1)
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
sink.set(spec, 0.2, tags(1))
print("worker", ray.get_runtime_context().get_worker_id(), flush=True)
sys.stdin.readline()  # in Ray until the test is done
ray.shutdown()
"""


@pytest.mark.slow  # a process joining Ray twice, then the gauges' export: about half a minute
def test_a_sink_kept_across_ray_instances_sets_its_gauges_again_in_the_next(ray_session) -> None:
    """A process that leaves Ray ends the sink's keep-alive thread; one that joins Ray again
    (the Python API runs one Ray run after another) gets a new one with its next gauge, which
    also sets the gauges held from before again, from this process (its WorkerId label)."""
    import ray

    port = ray_session["metrics_port"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", REJOIN,
                              ray.get_runtime_context().gcs_address],
                             env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        assert line.startswith("worker "), f"the child did not join Ray again: {line!r}"
        worker = line.split()[1]
        assert _until(port, {"0", "1"}, run="rejoined", worker=worker) == {"0", "1"}
    finally:
        child.communicate("\n", timeout=60)
