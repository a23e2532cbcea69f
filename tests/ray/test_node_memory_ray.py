"""The nodes' memory check of a Ray run: the blocks placed on a node against Ray's memory of
it, from the real placement group and node table."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.ray


def test_a_node_whose_blocks_would_fill_half_its_memory_is_named(ray_session) -> None:
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    from dbparallel.runtime.node_memory import crowded_nodes

    node = next(n for n in ray.nodes() if n["Alive"])
    memory = node["Resources"]["memory"]
    pg = placement_group([{"CPU": 0.1}] * 3, strategy="SPREAD")  # 2 blocks + the assembler
    ray.get(pg.ready(), timeout=60)
    try:
        assert crowded_nodes(pg, 2, int(memory / 5)) == []  # 2/5 of it
        warnings = crowded_nodes(pg, 2, int(memory / 3))  # 2/3 of it
        assert len(warnings) == 1 and "2 blocks" in warnings[0]
        assert node["NodeManagerAddress"] in warnings[0] and "data.window_shards" in warnings[0]
        assert crowded_nodes(pg, 3, int(memory / 5)) != []  # 3/5 with the third bundle counted
        assert crowded_nodes(pg, 2, 0) == []  # not measured: not checked
    finally:
        remove_placement_group(pg)
