"""The validation pass: every row of every split decoded once, as training would decode it.

A schema problem is caught when the data are indexed; a bad row (a corrupt image, a short
row, a label out of range) only when it is decoded. Training would meet it mid-stream and stop
there; this pass finds it before any block starts, at the cost of one read of the data on the
driver, or, on a Ray cluster, spread over its CPUs (runtime/data_check_ray.py): the rows are
cut into units of whole shards (about ``UNIT_ROWS`` rows), each checked on its own, and the
same bad rows are named either way: every one, in index order, up to ``MAX_BAD_ROWS`` (a
folder of photos with a few corrupt ones is fixed in one go, not one file per check). Data
of no more than one unit's rows, in all their splits, are checked by the driver even then:
starting task workers would take longer than the check. It runs once per data set and config:
a passed check is remembered in the cache, keyed by the data index's fingerprint and the
decoding settings, with what the check saw besides bad rows: the highest label, so that a
data.num_classes above the data's labels is warned of on every run, checked or remembered.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from dbparallel import errors
from dbparallel.config import Config
from dbparallel.data.bad_rows import decode_past_bad_rows
from dbparallel.data.cache import atomic_path, cache_dir
from dbparallel.data.images import LABEL_COLUMN
from dbparallel.data.shards import DataIndex
from dbparallel.data.split_reader import iter_chunks
from dbparallel.errors import BadRows
from dbparallel.host import machine_cpus
from dbparallel.tasks import build_task
from dbparallel.training.data_warnings import classes_warning
from dbparallel.training.progress import Progress

CHUNK = 1024  # rows decoded at a time
UNIT_ROWS = 65_536  # rows of whole shards checked by one worker, about


@dataclass(frozen=True)
class Unit:
    """Consecutive shards of one split, checked together: ``index.shards(split)[first:stop]``."""

    split: str
    first: int
    stop: int
    rows: int


@dataclass(frozen=True)
class Checked:
    """Rows that passed, and what they showed besides."""

    rows: int
    classes: int = 0  # the highest label among them + 1 (0: rows without labels)


# Runs ``units`` and yields each one's Checked as it passes, in any order; raises what
# ``first_failure`` makes of the units that failed: the bad rows first in index order.
UnitRunner = Callable[[list[Unit]], Iterator[Checked]]


def failures_needed(failures: dict[int, Exception]) -> int | None:
    """The last unit whose outcome can still change what a check with ``failures`` (unit
    -> its error) reports: units after it cannot (``MAX_BAD_ROWS`` bad rows are found before
    them, or another error); None while every unit can."""
    found = 0
    for at in sorted(failures):
        err = failures[at]
        found += len(err.rows) if isinstance(err, BadRows) else errors.MAX_BAD_ROWS
        if found >= errors.MAX_BAD_ROWS or (isinstance(err, BadRows) and err.stopped):
            return at
    return None


def first_failure(failures: dict[int, Exception]) -> Exception | None:
    """What a check whose units failed with ``failures`` raises, as one that checks the
    units in index order would: their bad rows, the first ``MAX_BAD_ROWS`` of them, or the
    first other error reached before those."""
    rows: list[str] = []
    for at in sorted(failures):
        err = failures[at]
        if not isinstance(err, BadRows):
            return err
        rows.extend(err.rows)
        if len(rows) >= errors.MAX_BAD_ROWS or err.stopped:
            return BadRows(rows[:errors.MAX_BAD_ROWS], stopped=True)
    return BadRows(rows) if rows else None


@dataclass(frozen=True)
class CheckResult:
    rows: int
    seconds: float
    cached: bool  # passed before: nothing read this time
    classes: int = 0  # the highest label of the data + 1 (0: no labels, or not known)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else float("inf")


def _stamp(cfg: Config, index: DataIndex) -> Path:
    d = cfg.data
    key = {"data": index.fingerprint, "task": cfg.task, "image_size": d.image_size,
           "channels": d.channels, "classes": d.num_classes, "vocab_size": d.vocab_size,
           **({"resize": True} if d.resize else {}),  # (the stamps of earlier checks hold)
           **({"latents": True} if d.latents else {})}  # latents pass what pixels may not
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir() / "checked" / f"{digest}.json"


def check_data(cfg: Config, index: DataIndex, force: bool = False,
               progress: bool | None = None, run: UnitRunner | None = None,
               unit_rows: int | None = None) -> CheckResult:
    """Decode every row of ``index`` with ``cfg``'s task; BadRows naming the file and row of
    each bad one (the first ``MAX_BAD_ROWS``, in index order). Skipped when this data set
    already passed with these settings. ``run`` checks the units (of about ``unit_rows`` rows,
    default ``UNIT_ROWS``) elsewhere (a Ray cluster's workers); without it, or for data of one
    unit or no more rows than one (a small data set's train and test splits are two units),
    they are checked here."""
    stamp = _stamp(cfg, index)
    total = sum(index.num_rows(s) for s in index.present())
    if stamp.is_file() and not force:
        return CheckResult(total, 0.0, True, json.loads(stamp.read_text()).get("classes", 0))
    unit_rows = unit_rows or UNIT_ROWS
    units = check_units(index, unit_rows)
    start = time.perf_counter()
    classes = 0
    with Progress(total, "checking data", "row", tty=progress) as bar:
        if run is None or len(units) == 1 or total <= unit_rows:  # here, on every core
            here = with_threads(cfg, cfg.data.decode_threads or machine_cpus())
            failures: dict[int, Exception] = {}
            for at, unit in enumerate(units):
                try:
                    classes = max(classes, check_unit(here, index, unit, bar.update).classes)
                except BadRows as err:  # the units after it may hold more
                    failures[at] = err
                    if failures_needed(failures) is not None:
                        break
            failure = first_failure(failures)
            if failure is not None:
                raise failure
        else:
            for checked in run(units):
                bar.update(checked.rows)
                classes = max(classes, checked.classes)
    seconds = time.perf_counter() - start
    tmp = atomic_path(stamp)
    tmp.write_text(json.dumps({"rows": total, "seconds": seconds, "source": index.source,
                               "classes": classes}))
    os.replace(tmp, stamp)
    return CheckResult(total, seconds, False, classes)


def check_here(cfg: Config, index: DataIndex, force: bool = False) -> None:
    """The validation pass in this process (local mode, ``data check``), reported."""
    report_check(cfg, index, check_data(cfg, index, force))


def report_check(cfg: Config, index: DataIndex, result: CheckResult) -> None:
    """Print ``result``'s line (none for a check remembered from before), and warn when the
    labels seen stop short of data.num_classes (an image folder's classes were warned of
    before the check, by their folders)."""
    line = check_line(result)
    if line:
        print(line, flush=True)
    warning = None if index.meta.get("classes") else classes_warning(
        cfg.data.num_classes, seen=result.classes)
    if warning:
        print(f"warning: {warning}", file=sys.stderr, flush=True)


def check_line(result: CheckResult) -> str | None:
    """What a check that read the data prints (None for one remembered from before)."""
    if result.cached:
        return None
    return (f"data: {result.rows:,} rows checked in {result.seconds:.1f} s "
            f"({result.rows_per_second:,.0f} rows/s; once per data set, data.validate=false "
            f"skips it)")


def check_units(index: DataIndex, unit_rows: int | None = None) -> list[Unit]:
    """Every split's shards in consecutive runs of about ``unit_rows`` rows (default
    ``UNIT_ROWS``), in index order."""
    unit_rows = unit_rows or UNIT_ROWS
    units = []
    for split in index.present():
        shards = index.shards(split)
        first, rows = 0, 0
        for i, shard in enumerate(shards):
            rows += shard.rows
            if rows >= unit_rows or i == len(shards) - 1:
                units.append(Unit(split, first, i + 1, rows))
                first, rows = i + 1, 0
    return units


def check_unit(cfg: Config, index: DataIndex, unit: Unit,
               on_rows: Callable[[int], object] | None = None) -> Checked:
    """Decode every row of ``unit`` as training would; what it saw, or BadRows naming the
    file and row of each bad one (it stops at ``MAX_BAD_ROWS``). ``on_rows`` hears of each
    chunk checked."""
    task = build_task(cfg)
    part_index = DataIndex(index.kind, index.source,
                           {unit.split: index.shards(unit.split)[unit.first:unit.stop]},
                           index.meta)
    classes, bad = 0, []
    for part in iter_chunks(part_index, unit.split, CHUNK, task.columns):
        table = part.table
        batches, found = decode_past_bad_rows(
            lambda a, b, t=table: task.decode(t.slice(a, b - a), "cpu"), table.num_rows,
            errors.MAX_BAD_ROWS - len(bad))
        bad += [str(err.at(part.where(row))) for row, err in found]
        if len(bad) == errors.MAX_BAD_ROWS:
            raise BadRows(bad, stopped=True)
        for _, _, batch in batches:
            labels = batch.get(LABEL_COLUMN)
            if labels is not None and labels.numel():
                classes = max(classes, int(labels.max()) + 1)
        if on_rows is not None:
            on_rows(table.num_rows)
    if bad:
        raise BadRows(bad)
    return Checked(unit.rows, classes)


def with_threads(cfg: Config, threads: int) -> Config:
    """``cfg`` with ``threads`` decode threads."""
    if cfg.data.decode_threads == threads:
        return cfg
    cfg = copy.deepcopy(cfg)
    cfg.data.decode_threads = threads
    return cfg


def readable_anywhere(index: DataIndex) -> bool:
    """Whether another machine reads ``index``'s files as this one does: data not built into
    this machine's cache, named by object-store URIs or absolute paths (a shared file system,
    as the blocks need one)."""
    if index.meta.get("cached"):
        return False
    return all("://" in shard.uri or os.path.isabs(shard.uri)
               for shards in index.splits.values() for shard in shards)
