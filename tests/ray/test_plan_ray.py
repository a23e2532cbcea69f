"""dbparallel plan on a running cluster: its shape is read from Ray, not assumed, and the
cluster is named by the address it was joined at."""

from __future__ import annotations

import json

import pytest
import ray

from dbparallel import cli

pytestmark = pytest.mark.ray


def test_plan_reads_the_cluster_it_joins(ray_session, capsys, monkeypatch) -> None:
    # the session's instance: 2 CPUs, no GPU; 4 blocks of 1 CPU fit 2 at a time
    gcs = ray.get_runtime_context().gcs_address
    assert cli.main(["plan", "model.blocks=4", "runtime.cpus_per_block=1",
                     "runtime.address=auto"]) == 0
    out = capsys.readouterr().out
    assert f"cluster (runtime.address=auto: the local instance at {gcs}): 0 GPUs, 2 CPUs; " \
        f"each block 1 CPU" in out
    assert "2 of 4 blocks at once: 2 waves" in out
    monkeypatch.setenv("RAY_ADDRESS", gcs)
    assert cli.main(["plan", "model.blocks=4", "runtime.cpus_per_block=1", "--json"]) == 0
    cluster = json.loads(capsys.readouterr().out)["cluster"]
    assert (cluster["source"], cluster["joined"]) == ("detected", f"RAY_ADDRESS={gcs}")
