"""Whether the blocks Ray placed on a node would fill its memory with data rows.

Once the run's placement group is ready, every block's bundle has a node. Each block streams
its data a few windows at a time (training/data_memory.py says how many bytes); a node whose
blocks together would hold over half of Ray's memory of that node (the ``memory`` resource:
what the node had free at its start, less its object store) gets a warning that names
``data.window_shards``, before anything trains.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import ray
from ray.util.placement_group import placement_group_table

from dbparallel.training.data_memory import footprint_warning


def crowded_nodes(pg: Any, block_bundles: int, per_block: int) -> list[str]:
    """A warning for each node where the first ``block_bundles`` bundles of ``pg`` (one per
    block process) would hold over half its memory in data rows, ``per_block`` bytes each."""
    if not per_block or not block_bundles:
        return []
    placed = placement_group_table(pg)["bundles_to_node_id"]
    per_node = Counter(placed[i] for i in range(block_bundles) if i in placed)
    nodes = {n["NodeID"]: n for n in ray.nodes() if n.get("Alive")}
    warnings = []
    for node_id, blocks in sorted(per_node.items()):
        node = nodes.get(node_id)
        memory = node["Resources"].get("memory", 0.0) if node else 0.0
        if not memory:
            continue
        where = f"node {node['NodeManagerAddress']}'s Ray memory"
        warning = footprint_warning(per_block, blocks, memory, where)
        if warning:
            warnings.append(warning)
    return warnings
