"""Reserving a run's placement group on the session's Ray instance (runtime/placement.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbparallel.config import load_config

pytestmark = pytest.mark.ray
RECIPE = Path(__file__).resolve().parents[2] / "jobs" / "tiny_cpu.yaml"


def test_a_stop_while_waiting_for_placement_removes_the_group(ray_session, tmp_path,
                                                               monkeypatch) -> None:
    """Ctrl-C (or SIGTERM) while the run waits for the cluster to place its blocks: the
    placement group is removed, not left to the program, which joined Ray itself and stays
    connected (its cluster would place the group once it has room, and hold it)."""
    from ray.util.placement_group import placement_group_table

    from dbparallel.runtime import placement

    made, real = [], placement.placement_group

    def stopped_while_waiting(bundles, strategy):
        pg = real(bundles, strategy=strategy)
        made.append(pg)

        def ready():
            raise KeyboardInterrupt  # as Ctrl-C in ray.get(pg.ready())

        pg.ready = ready
        return pg

    monkeypatch.setattr(placement, "placement_group", stopped_while_waiting)
    cfg = load_config([RECIPE], [f"run.dir={tmp_path / 'run'}"])
    with pytest.raises(KeyboardInterrupt):
        placement.reserve_start(cfg, 2)
    assert len(made) == 1
    assert placement_group_table(made[0])["state"] == "REMOVED"
