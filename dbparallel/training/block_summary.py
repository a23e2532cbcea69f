"""A block's row of report.json: its steps, losses, memory and what its process measured.

Built by the block's run (training/loop.py, ``BlockRun.summary``) from its trainer; the runtime
fills in the restarts it counted, and report.json (training/report.py) holds one row a block.
"""

from __future__ import annotations

from typing import Any

from dbparallel.training.block_trainer import BlockTrainer


def block_summary(trainer: BlockTrainer, resumed_from: int, restarts: int,
                  measured: dict[str, Any]) -> dict[str, Any]:
    """The report.json row of ``trainer``'s block, resumed at step ``resumed_from``, with
    ``restarts`` and what this process (or, where it trained no step, the last that did)
    ``measured``."""
    t = trainer
    return {
        "block": t.block,
        "steps": t.step,
        # the step of the checkpoint this block's last process resumed from (0: from the
        # start); a rerun, or Ray's restart of a killed block, shows where it went on
        "resumed_from": resumed_from,
        "final_loss": t.final_loss,
        "last_loss": t.recent_losses[-1] if t.recent_losses else float("nan"),
        "restarts": restarts,
        "replicas": t.replicas.world if t.replicas else 1,
        "peak_memory_bytes": t.memory.total if t.memory else 0,
        "memory": t.memory.to_json() if t.memory else None,
        "nonfinite_steps": t.nonfinite_steps,
        "sigma_range": list(t.sigma_range),
        # data_memory_bytes: the most bytes of unpacked data rows this process's stream
        # held, seen at each batch (a window being read ahead counts once it is read);
        # model_flops_per_step: forward + backward matmul FLOPs of one step
        # (training/flops.py); achieved_tflops: the rate over this process's steady steps;
        # mfu: against the device's peak (None: CPU, unknown); data_wait_share: the share
        # of its steady steps' time this process waited for batches; heldout_loss: the latest
        # held-out loss (train.heldout_every), on rows of heldout_split ("train" when the
        # data has no other). A process that trained no step reports those of the last
        # process that did.
        **measured,
    }
