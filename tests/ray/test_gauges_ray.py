"""A gauge a Ray process sets once stays on its node's metrics port while the process lives."""

from __future__ import annotations

import re
import time
import urllib.request

import pytest

pytestmark = pytest.mark.ray


def _sigma_blocks(port: int) -> set[str]:
    """The blocks of run "gauges" whose sigma_low gauge the node's metrics port serves."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return set(re.findall(r'^ray_dbparallel_block_sigma_low\{[^}]*block="(\d+)"[^}]*'
                          r'run="gauges"[^}]*\}', text, re.M))


def _until(port: int, want: set[str], timeout_s: float = 60) -> set[str]:
    deadline = time.monotonic() + timeout_s  # a guard only
    while (seen := _sigma_blocks(port)) != want and time.monotonic() < deadline:
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
