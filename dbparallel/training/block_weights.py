"""A run's blocks built from their saved weights, and what keeps a state dict from fitting.

The composed network (training/network.py) is built from one state dict per block, from a run
directory's snapshots or from an export file; a state dict that does not fit its block's
network (a tensor missing, extra or of another shape) is refused naming the block and tensor.
"""

from __future__ import annotations

import torch

from dbparallel.errors import RunDirError
from dbparallel.models.block import Block
from dbparallel.tasks import Task


def loaded_blocks(task: Task, weights: list[dict[str, torch.Tensor]],
                  device: str) -> list[Block]:
    """``task``'s blocks with ``weights`` (one state dict per block, block 0 first), on
    ``device`` in eval mode; RunDirError naming the block and tensor where one does not fit
    the network of its block."""
    blocks = []
    for b, state in enumerate(weights):
        net = task.build_block(b)
        misfit = _misfit(net, state)
        if misfit:
            raise RunDirError(f"block {b}: {misfit}")
        net.load_state_dict(state)
        blocks.append(net.to(device).eval())
    return blocks


def _misfit(net: torch.nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """What keeps ``state`` from loading into ``net`` (a tensor missing, extra or of another
    shape), or None."""
    own = net.state_dict()
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing:
        return f"no tensor {missing[0]} ({len(missing)} of the network's missing)"
    if extra:
        return f"a tensor {extra[0]} the network does not have ({len(extra)} such)"
    for name, tensor in own.items():
        if state[name].shape != tensor.shape:
            return (f"{name} has shape {tuple(state[name].shape)}, the network's "
                    f"{tuple(tensor.shape)}")
    return None
