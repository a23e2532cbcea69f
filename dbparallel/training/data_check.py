"""The validation pass: every row of every split decoded once, as training would decode it.

A schema problem is caught when the data are indexed; a bad row (a corrupt image, a short
row, a label out of range) only when it is decoded. Training would meet it mid-stream and stop
there; this pass finds it before any block starts, at the cost of one read of the data on the
driver. It runs once per data set and config: a passed check is remembered in the cache, keyed
by the data index's fingerprint and the decoding settings.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from dbparallel.config import Config
from dbparallel.data.cache import atomic_path, cache_dir
from dbparallel.data.shard_reader import iter_chunks
from dbparallel.data.shards import DataIndex
from dbparallel.errors import RowError
from dbparallel.tasks import build_task
from dbparallel.training.data_memory import machine_cpus

CHUNK = 1024  # rows decoded at a time


@dataclass(frozen=True)
class CheckResult:
    rows: int
    seconds: float
    cached: bool  # passed before: nothing read this time

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else float("inf")


def _stamp(cfg: Config, index: DataIndex) -> Path:
    d = cfg.data
    key = {"data": index.fingerprint, "task": cfg.task, "image_size": d.image_size,
           "channels": d.channels, "classes": d.num_classes, "vocab_size": d.vocab_size}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir() / "checked" / f"{digest}.json"


def check_data(cfg: Config, index: DataIndex, force: bool = False,
               progress: bool | None = None) -> CheckResult:
    """Decode every row of ``index`` with ``cfg``'s task; DataError naming the file and row of
    the first bad one. Skipped when this data set already passed with these settings."""
    stamp = _stamp(cfg, index)
    total = sum(index.num_rows(s) for s in index.present())
    if stamp.is_file() and not force:
        return CheckResult(total, 0.0, True)
    if not cfg.data.decode_threads:  # the driver decodes with every core of its machine
        cfg = copy.deepcopy(cfg)
        cfg.data.decode_threads = machine_cpus()
    task = build_task(cfg)
    start = time.perf_counter()
    show = sys.stderr.isatty() if progress is None else progress
    with tqdm(total=total, desc="checking data", unit="row", disable=not show) as bar:
        for split in index.present():
            for part in iter_chunks(index, split, CHUNK, task.columns):
                try:
                    task.decode(part.table, "cpu")
                except RowError as err:
                    raise err.at(part.where(err.row)) from None
                bar.update(part.table.num_rows)
    seconds = time.perf_counter() - start
    tmp = atomic_path(stamp)
    tmp.write_text(json.dumps({"rows": total, "seconds": seconds, "source": index.source}))
    os.replace(tmp, stamp)
    return CheckResult(total, seconds, False)
