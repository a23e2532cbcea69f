"""Opening a run directory: the resolved config is written once and guards every resume."""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import TYPE_CHECKING

import pyarrow.fs as pafs

from dbparallel.config import (
    Config,
    changed_settings,
    dump_yaml,
    identity,
    identity_diff,
    same_local_path,
    stored_dict,
    to_dict,
)
from dbparallel.data.shards import DataIndex
from dbparallel.data.tokenizer import Tokenizer
from dbparallel.errors import DataError, RunDirError
from dbparallel.training.storage import DamagedFile, Storage, damaged

if TYPE_CHECKING:
    from dbparallel.training.checkpoint import BlockCheckpoints

CONFIG_FILE = "config.yaml"
DATA_INDEX_FILE = "data_index.json"
MAX_LISTED = 4  # differing keys whose values a refusal prints
VOCAB_FILE = "vocab.json"  # text runs: the tokenizer, so the network is usable without data
# what a run writes at its root (and everything under blocks/): a command's output never
# replaces one of them
RUN_FILES = (CONFIG_FILE, DATA_INDEX_FILE, VOCAB_FILE, "report.json", "assembly.jsonl",
             "diagnostics.json", "curves.png", "samples.png", "confusion.json", "samples.txt",
             "assembler_restarts.json")
log = logging.getLogger(__name__)


def open_run(cfg: Config, blocks: list[int] | None = None) -> Storage:
    """Storage of ``cfg``'s run directory; refuses a directory trained with another network,
    or one whose ``blocks`` (default: all) another live process trains, before writing.
    A ``data.path`` that spells the stored one's local path differently (``./data/x``, its
    absolute path) is set back to the stored spelling in ``cfg``: every checkpoint of the run
    carries one config hash."""
    refuse_a_passing_run_dir(cfg)
    storage = Storage(cfg.run_dir)
    try:
        storage.makedirs()
    except OSError as err:  # a file in the way, a read-only or missing mount
        raise RunDirError(f"run.dir={cfg.run_dir}: cannot create the run directory "
                          f"({getattr(err, 'strerror', None) or err})") from None
    _refuse_other_config(storage, cfg)
    _refuse_live_writers(storage, cfg, blocks)
    if storage.exists(CONFIG_FILE):
        before = stored_config(storage)
        stored = (before.get("data") or {}).get("path")
        if stored != cfg.data.path and same_local_path(stored, cfg.data.path):
            cfg.data.path = stored
        changed = changed_settings(before, cfg)
        if changed:
            log.warning("resuming %s with other settings: %s (they do not change the network; "
                        "config.yaml now records them)", storage.uri(), ", ".join(
                            f"{k} {a!r} -> {b!r}" for k, a, b in changed[:MAX_LISTED])
                        + (f" and {len(changed) - MAX_LISTED} more"
                           if len(changed) > MAX_LISTED else ""))
    storage.write_text(CONFIG_FILE, dump_yaml(cfg))
    return storage


def check_resumable(cfg: Config, index: DataIndex, blocks: list[int] | None = None) -> None:
    """The RunDirError ``open_run`` or ``pin_data`` would raise for ``cfg``'s run directory,
    ``index`` and ``blocks`` (default: all), raised now, without writing anything (a run that
    checks its data first)."""
    refuse_a_passing_run_dir(cfg)
    storage = Storage(cfg.run_dir)
    _refuse_other_config(storage, cfg)
    _refuse_live_writers(storage, cfg, blocks)
    _refuse_other_data(storage, index, start=blocks is None, say=False)  # pin_data says it


RAY_PACKAGES = f"{os.sep}runtime_resources{os.sep}working_dir_files{os.sep}"


def refuse_a_passing_run_dir(cfg: Config) -> None:
    """RunDirError for a relative run.dir where this process runs in Ray's copy of a job's
    working directory (``ray job submit --working-dir``): Ray may delete that copy once
    unused, and each node has its own."""
    if "://" in cfg.run_dir or os.path.isabs(cfg.run_dir) or RAY_PACKAGES not in os.getcwd():
        return
    raise RunDirError(
        f"run.dir={cfg.run_dir} is relative, and this job runs in Ray's copy of its working "
        f"directory ({os.getcwd()}), of which every node has its own and which Ray may delete "
        f"once no job uses it: give run.dir an absolute path on storage every node sees "
        f"(e.g. run.dir=/shared/runs/{cfg.run.name}) or an object-store URI (s3://...)")


def _refuse_live_writers(storage: Storage, cfg: Config, blocks: list[int] | None) -> None:
    """A block another live process trains (its lease held, BlockLease.refuse_if_held) is
    refused here, in the driver, before this run writes config.yaml or starts anything; the
    block's own lease stays the guard against a race between two starting runs."""
    from dbparallel.training.lease import BlockLease

    for b in range(cfg.model.blocks) if blocks is None else blocks:
        BlockLease(storage, b, "", cfg.train.lease_timeout_s).refuse_if_held()


def _refuse_other_config(storage: Storage, cfg: Config) -> None:
    stored = (stored_config(storage) if storage.exists(CONFIG_FILE)
              else _checkpointed_config(storage))
    if stored is not None:
        then, now = identity(stored), identity(cfg)
        # the task first: another task makes every other difference beside the point
        keys = sorted(identity_diff(stored, to_dict(cfg)), key=lambda k: (k != "task", k))
        if keys:
            values = "; ".join(f"{k}: {then.get(k)!r} there, {now.get(k)!r} now"
                               for k in keys[:MAX_LISTED])
            more = f"; and {len(keys) - MAX_LISTED} more" if len(keys) > MAX_LISTED else ""
            if _checkpointed(storage):
                raise RunDirError(
                    f"{storage.uri()} holds blocks trained with other values of "
                    f"{', '.join(keys)} ({values}{more}); resume with the same values or "
                    f"choose a new run.dir")
            # a run that stopped (or still starts) before any block saved a checkpoint: the
            # directory may belong to a live run that is still checking its data, so it is
            # never taken over; the user knows whether one is running
            raise RunDirError(
                f"{storage.uri()} was started with other values of {', '.join(keys)} "
                f"({values}{more}) and no block has saved a checkpoint yet; resume with the "
                f"same values, choose a new run.dir, or delete the directory if no run uses it")


def _checkpointed_config(storage: Storage) -> dict | None:
    """The config a block's newest readable snapshot was trained with: a run directory whose
    config.yaml is missing (a partial copy) still refuses another network before it is
    written."""
    for checkpoints in _blocks_checkpoints(storage):
        saved = checkpoints.load_latest("snapshot")
        if saved is not None:
            return saved["meta"]["config"]
    return None


def _checkpointed(storage: Storage) -> bool:
    """Whether any block of the run in ``storage`` has a checkpoint listed."""
    return any(m["state"] or m["snapshot"]
               for m in (c.manifest() for c in _blocks_checkpoints(storage)))


def _blocks_checkpoints(storage: Storage) -> list[BlockCheckpoints]:
    """The checkpoints of every block folder of the run in ``storage``."""
    from dbparallel.training.checkpoint import BlockCheckpoints

    return [BlockCheckpoints(storage, int(name[len("block_"):]))
            for name in storage.listdir("blocks")
            if name.startswith("block_") and name[len("block_"):].isdigit()]


def require_run_dir(storage: Storage, shown: str) -> None:
    """RunDirError unless ``storage`` holds a run directory (its config.yaml); ``shown``
    names it in the message (e.g. ``--against DIR``)."""
    if storage.exists(CONFIG_FILE):
        return
    if storage.is_local and not storage.exists(""):
        raise RunDirError(f"{shown}: no such directory")
    raise RunDirError(f"{shown}: not a run directory (no {CONFIG_FILE})")


def stored_config(storage: Storage) -> dict:
    """The config dict a run directory was trained with; RunDirError naming config.yaml when
    it is damaged."""
    try:
        return stored_dict(storage.read_text(CONFIG_FILE))
    except DamagedFile:
        raise
    except ValueError as err:
        raise damaged(storage.uri(CONFIG_FILE), err) from None


def pin_data(storage: Storage, index: DataIndex, start: bool = False) -> None:
    """Record the data a run trains on; a resume on other data (files added, changed or
    re-written) is refused, because every block's data order depends on it. A driver that
    ``start``s the run (no live writer of its blocks: open_run) pins the data as it is now
    where no block has saved a checkpoint yet and the process that pinned them has ended,
    e.g. after a bad row was corrected. The index records that process (``pinned_by``)."""
    fresh = not storage.exists(DATA_INDEX_FILE) or _refuse_other_data(storage, index, start)
    if fresh:
        from dbparallel.training.lease import this_process

        storage.write_json(DATA_INDEX_FILE, {**index.to_json(), PINNED_BY: this_process()})
    if index.meta.get("tokenizer") and (fresh or not storage.exists(VOCAB_FILE)):
        from dbparallel.data.tokenizer import load_tokenizer

        storage.write_json(VOCAB_FILE, load_tokenizer(index.meta).describe())


def _refuse_other_data(storage: Storage, index: DataIndex, start: bool = False,
                       say: bool = True) -> bool:
    """RunDirError where the run directory pinned other data than ``index``; True where it
    did and a starting driver (``start``) may pin ``index`` instead (``say``ing so): no block
    has saved a checkpoint, and the process that pinned them (a run still starting, e.g.
    waiting for its placement) has ended."""
    previous = pinned_data(storage)
    if previous is None:
        return False
    # the rows are compared where they are now: data/x, ./data/x and /…/data/x are one place,
    # and a folder moved or copied with its files' times (mv, cp -p, rsync -a) holds the same
    # rows under another source
    moved = previous.source != index.source and not same_local_path(previous.source,
                                                                     index.source)
    if dataclasses.replace(index, source=previous.source).fingerprint == previous.fingerprint:
        if moved and say:
            log.warning("%s: the data moved from %s to %s (the same files, sizes and times); "
                        "the run reads them there from now on", storage.uri(), previous.source,
                        index.source)
        return moved
    then, now = previous.num_rows("train"), index.num_rows("train")
    if start and not _checkpointed(storage):
        from dbparallel.training.lease import process_ended, process_shown

        pinner = storage.read_json(DATA_INDEX_FILE).get(PINNED_BY)
        if process_ended(pinner):
            if say:
                log.warning("%s: the data changed since the run was started (%s training "
                            "rows then, %s now); no block has saved a checkpoint, so the run "
                            "starts on the data as it is now", storage.uri(), f"{then:,}",
                            f"{now:,}")
            return True
        raise RunDirError(
            f"{storage.uri()} was started on other data than {index.source} now holds "
            f"({then:,} training rows then, {now:,} now) and no block has saved a checkpoint "
            f"yet, by a process that may still run ({process_shown(pinner)}); resume with the same "
            f"data, choose a new run.dir, or delete the directory if no run uses it")
    if _same_files(previous, dataclasses.replace(index, source=previous.source)):
        raise RunDirError(
            f"{storage.uri()} was trained on data whose files had other sizes or modification "
            f"times than those {index.source} holds now (the same files and rows: copied "
            f"without keeping their times, touched, or rewritten); resume with the "
            f"original files or choose a new run.dir. If their contents are unchanged, delete "
            f"{storage.uri(DATA_INDEX_FILE)} to pin the data as it is now")
    raise RunDirError(
        f"{storage.uri()} was trained on other data than {index.source} now holds "
        f"({then:,} training rows then, {now:,} now: files added, changed or rewritten, or "
        f"read into other splits); resume with the original data or choose a new run.dir")


PINNED_BY = "pinned_by"  # data_index.json: the process that pinned the data


def _same_files(a: DataIndex, b: DataIndex) -> bool:
    """Whether two indexes differ only in their files' sizes and modification times (meta
    ``stat``): the same files, shards and rows."""
    def without_stat(index: DataIndex) -> DataIndex:
        return dataclasses.replace(index, meta={k: v for k, v in index.meta.items()
                                                if k != "stat"})

    return "stat" in a.meta and without_stat(a).fingerprint == without_stat(b).fingerprint


def pinned_data(storage: Storage) -> DataIndex | None:
    """The data index a run directory was trained on, if recorded."""
    if not storage.exists(DATA_INDEX_FILE):
        return None
    try:
        return DataIndex.from_json(storage.read_json(DATA_INDEX_FILE))
    except (KeyError, TypeError, AttributeError, AssertionError) as err:
        raise damaged(storage.uri(DATA_INDEX_FILE), f"{type(err).__name__}: {err}") from None


def run_data(cfg: Config, storage: Storage) -> DataIndex:
    """The data a process of the run reads: the index pinned in the run directory. Data sets
    built into a cache (the built-in ones, tokenized corpora) live in each machine's own cache:
    where the pinned files are not on this machine, they are built here, deterministically,
    and must come out the same."""
    pinned = pinned_data(storage)
    if pinned is None:
        raise RunDirError(f"{storage.uri()}: no {DATA_INDEX_FILE}; the run was not started "
                          "by `dbparallel train`")
    if pinned.meta.get("cached") and not _reachable(pinned):
        from dbparallel.data.sources import open_data

        here = open_data(cfg.data)
        pin_data(storage, here)  # refuses an index that came out different
        return here
    return pinned


def _reachable(index: DataIndex) -> bool:
    from dbparallel.data.tables import resolve_path

    shard = next(s for shards in index.splits.values() for s in shards)
    fs, path = resolve_path(shard.uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def run_tokenizer(storage: Storage) -> Tokenizer | None:
    """The tokenizer of a text run (its vocab.json), None for image runs."""
    from dbparallel.data.tokenizer import tokenizer_from_description

    if not storage.exists(VOCAB_FILE):
        return None
    description = storage.read_json(VOCAB_FILE)
    try:
        if not isinstance(description, dict):
            raise DataError("expected an object")
        return tokenizer_from_description(description)
    except DataError as err:
        raise damaged(storage.uri(VOCAB_FILE), err) from None
