"""Training a run from its config: what `dbparallel train` and `dbparallel.train` both do.

The data are indexed first (schema problems stop here, before any block starts), the block's
data memory is printed, and the rows are checked once (``data.validate``): here in local
mode, on the cluster's CPUs in a Ray run. Then every block trains, here one after another
(``runtime.local``) or as concurrent Ray actors. A local run's process, or a Ray run's
driver, records itself in the run directory from its data check on (training/running.py),
for ``dbparallel stop``.
"""

from __future__ import annotations

import logging
from typing import Any

from dbparallel.config import Config
from dbparallel.errors import UserError
from dbparallel.tasks import build_task, unused_blocks_warning
from dbparallel.training.data_check import check_here
from dbparallel.training.data_memory import report_footprint
from dbparallel.training.plan import memory_warning
from dbparallel.training.run_dir import (
    absolute_paths,
    check_resumable,
    refuse_a_passing_run_dir,
    refuse_another_network,
    refuse_run_dir_in_data,
)
from dbparallel.training.running import running
from dbparallel.training.schedule import warmup_warning

log = logging.getLogger(__name__)


def train_run(cfg: Config, only_blocks: list[int] | None = None,
              progress: bool | None = None) -> dict[str, Any]:
    """Train ``cfg``'s run (only the blocks ``only_blocks``, in local mode) and return its
    report (report.json's content)."""
    from dbparallel.data.sources import check_kind, open_data
    from dbparallel.runtime.local import check_blocks

    if only_blocks and not cfg.runtime.local:
        raise UserError("--block: trains a subset of blocks in this process; add --local "
                        "(Python: blocks= with local=True)")
    task = build_task(cfg)  # a config no task takes stops the run before it starts
    if cfg.sample.decoder:  # a name that does not import here stops the run before it trains
        from dbparallel.training.eval.decoder import load_decoder

        load_decoder(cfg.sample.decoder)
    for warning in (memory_warning(cfg),  # runtime.device_memory given and a block exceeds it
                    warmup_warning(cfg.train, cfg.model.blocks),
                    unused_blocks_warning(cfg, task)):  # a block the sampler never runs
        if warning:
            log.warning(warning)
    if only_blocks:
        check_blocks(cfg, only_blocks)  # before the data are indexed
    if not cfg.runtime.local:
        refuse_a_passing_run_dir(cfg)  # a job's relative run.dir, before it is made absolute
        cfg = absolute_paths(cfg)  # the driver's paths, not those of the nodes' processes
    check_kind(cfg.task, cfg.data)  # before a corpus is tokenized for nothing
    refuse_run_dir_in_data(cfg)  # its files would be the next run's data
    refuse_another_network(cfg)  # a resume of other data.tokenizer: before it tokenizes
    index = open_data(cfg.data)
    check_kind(cfg.task, cfg.data, index)
    index.shards("train")  # no training rows: refused before the run directory is written
    if cfg.runtime.local:
        from dbparallel.runtime.local import run_local

        report_footprint(cfg, index)  # its warnings (tiny row groups) before the long pass
        if cfg.data.validate:
            check_resumable(cfg, index, only_blocks)  # refusals before the long pass
        # from here to its end `dbparallel stop` finds this process, also while it holds no
        # block's lease: checking the data, or between two blocks
        with running(cfg, only_blocks):
            if cfg.data.validate:
                check_here(cfg, index)
            return run_local(cfg, index, progress=progress, only_blocks=only_blocks)
    from dbparallel.runtime.launch import run_ray

    data_bytes = report_footprint(cfg, index)  # the rows are checked on the cluster
    return run_ray(cfg, index, progress=progress, data_bytes=data_bytes,
                   validate=cfg.data.validate)
