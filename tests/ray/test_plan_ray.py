"""dbparallel plan on a running cluster: its shape is read from Ray, not assumed."""

from __future__ import annotations

import pytest

from dbparallel import cli

pytestmark = pytest.mark.ray


def test_plan_reads_the_cluster_it_joins(ray_session, capsys) -> None:
    # the session's instance: 2 CPUs, no GPU; 4 blocks of 1 CPU fit 2 at a time
    assert cli.main(["plan", "model.blocks=4", "runtime.cpus_per_block=1",
                     "runtime.address=auto"]) == 0
    out = capsys.readouterr().out
    assert "cluster (detected): 0 GPUs, 2 CPUs; each block 1 CPU" in out
    assert "2 of 4 blocks at once: 2 waves" in out
