"""The data a run trains on, pinned in its run directory (``data_index.json``): every block's
data order depends on the rows, so a resume on other rows is refused; the same rows moved
elsewhere (with their files' names, sizes and times) are pinned at their new place.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
from typing import TYPE_CHECKING

import pyarrow.fs as pafs

from dbparallel.config import Config, same_local_path
from dbparallel.data.shards import DataIndex
from dbparallel.errors import DataError, RunDirError
from dbparallel.shell import shell_path
from dbparallel.training.holder import process_ended, process_shown, this_process
from dbparallel.training.storage import DamagedFile, Storage, damaged

if TYPE_CHECKING:  # the tokenizer imports torch, which `dbparallel status` does without
    from dbparallel.data.tokenizer import Tokenizer

DATA_INDEX_FILE = "data_index.json"
VOCAB_FILE = "vocab.json"  # text runs: the tokenizer, so the network is usable without data
log = logging.getLogger(__name__)
INDEX_REMEDY = ("restore it from a copy; or, where the data at data.path are the ones the run "
                "trained on, delete it: the next `dbparallel train` pins them again")


def pin_data(storage: Storage, index: DataIndex, start: bool = False) -> None:
    """Record the data a run trains on; a resume on other data (files added, changed or
    re-written) is refused, because every block's data order depends on it. A driver that
    ``start``s the run (no live writer of its blocks: open_run) pins the data as it is now
    where no block has saved a checkpoint yet and the process that pinned them has ended,
    e.g. after a bad row was corrected. The index records that process (``pinned_by``)."""
    pinned = {**index.to_json(), PINNED_BY: this_process()}
    created = not storage.exists(DATA_INDEX_FILE) and storage.create_bytes(
        DATA_INDEX_FILE, (json.dumps(pinned, indent=2) + "\n").encode())
    # not created: pinned before, or by another process since (--block processes starting
    # one directory at once), whose data this one's are checked against, never written over
    fresh = created or refuse_other_data(storage, index, start)
    if fresh and not created:
        storage.write_json(DATA_INDEX_FILE, pinned)
    if not index.meta.get("tokenizer"):
        return
    from dbparallel.data.tokenizer import load_tokenizer

    built = load_tokenizer(index.meta).describe()
    if fresh and not created:  # pinned again: the tokenizer of the data as they are now
        storage.write_json(VOCAB_FILE, built)
    elif not storage.create_bytes(VOCAB_FILE, (json.dumps(built, indent=2) + "\n").encode()) \
            and storage.read_json(VOCAB_FILE) != built:  # written by another process
        raise DataError(_other_tokenizer(storage, index))


def _other_tokenizer(storage: Storage, index: DataIndex) -> str:
    """Why a tokenizer built here from the run's text is refused: it is not the run's
    (a BPE built by another version of the tokenizers package, on another node)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        here = f"tokenizers {version('tokenizers')}"
    except PackageNotFoundError:
        here = "no tokenizers package"
    return (f"{storage.uri(VOCAB_FILE)}: the tokenizer built on {socket.gethostname()} from "
            f"the run's text (data.tokenizer={index.meta['tokenizer']}) is not "
            f"the run's: its token ids would differ from the other blocks'. Install the "
            f"same version of the tokenizers package on every node ({here} here) and delete "
            f"this machine's tokenized copy of the corpus, or train every block where the "
            f"run started")


def refuse_other_data(storage: Storage, index: DataIndex, start: bool = False,
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
    was, now_at = previous.source.rstrip("/"), index.source.rstrip("/")
    moved = was != now_at and not same_local_path(was, now_at)
    here, there = _placeless(index), _placeless(previous)
    if here.fingerprint == there.fingerprint:
        if moved and say:
            log.warning("%s: the data moved from %s to %s (the same files, sizes and times); "
                        "the run reads them there from now on", storage.uri(), previous.source,
                        index.source)
        return moved
    then, now = previous.num_rows("train"), index.num_rows("train")
    from dbparallel.training.checkpoint import any_checkpoint

    if start and not any_checkpoint(storage):
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
    if _same_files(there, here):
        where = f" at {previous.source}" if moved else ""
        raise RunDirError(
            f"{storage.uri()} was trained on data{where} whose files had other sizes or "
            f"modification times than those {index.source} holds now (files of the same names "
            f"and row counts: copied without keeping their times, touched, rewritten, or other "
            f"data laid out alike); resume with the original files, or give a new run.dir (or "
            f"run.name) for a run of other data. If their contents are unchanged, or only bad "
            f"rows were corrected in place, delete {storage.uri(DATA_INDEX_FILE)} to pin the "
            f"data as it is now")
    if moved:  # another path: the run's own data are named, with where they were
        raise RunDirError(
            f"{storage.uri()} was trained on the data at {previous.source} ({then:,} training "
            f"rows), and {index.source} holds other data ({now:,}); resume with "
            f"data.path={shell_path(previous.source)}, or choose a new run.dir for a run of "
            f"these data")
    raise RunDirError(
        f"{storage.uri()} was trained on other data than {index.source} now holds "
        f"({then:,} training rows then, {now:,} now: files added, changed or rewritten, or "
        f"read into other splits); {OTHER_DATA_FIX}")


OTHER_DATA_FIX = "resume with the original data or choose a new run.dir"  # cli_network_data


PINNED_BY = "pinned_by"  # data_index.json: the process that pinned the data


def _placeless(index: DataIndex) -> DataIndex:
    """``index`` without where it lies: no source, and shard paths relative to it (an image
    folder's shard is the folder itself, whose name a move may change)."""
    root = index.source.rstrip("/")

    def inside(uri: str) -> str:
        return uri[len(root):] if root and uri.startswith(root) else uri

    return dataclasses.replace(index, source="", splits={
        split: tuple(dataclasses.replace(s, uri=inside(s.uri)) for s in shards)
        for split, shards in index.splits.items()})


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
    except DamagedFile as err:
        raise damaged(err.where, err.why, INDEX_REMEDY) from None
    except (KeyError, TypeError, AttributeError, AssertionError) as err:
        raise damaged(storage.uri(DATA_INDEX_FILE), f"{type(err).__name__}: {err}",
                      INDEX_REMEDY) from None


def run_data(cfg: Config, storage: Storage) -> DataIndex:
    """The data a process of the run reads: the index pinned in the run directory. Data sets
    built into a cache (the built-in ones, tokenized corpora) live in each machine's own cache:
    where the pinned files are not on this machine, they are built here, deterministically,
    and must come out the same."""
    pinned = pinned_data(storage)
    if pinned is None:
        raise RunDirError(f"{storage.uri()}: no {DATA_INDEX_FILE}; the run was not started "
                          "by `dbparallel train`")
    if _reachable(pinned):
        return pinned
    if pinned.meta.get("cached"):
        from dbparallel.data.sources import open_data

        here = open_data(cfg.data)
        pin_data(storage, here)  # refuses an index that came out different
        return here
    if "://" not in pinned.source and not os.path.isabs(pinned.source):
        raise DataError(
            f"{storage.uri()} was trained on the data at {pinned.source}, which are not there: "
            f"data.path is relative, and this process runs in {os.getcwd()}: start it where "
            f"the run started, or run the run's `dbparallel train` command with "
            f"run.dir={shell_path(storage.uri())} and an absolute data.path (it checks they "
            f"are the same rows and pins them there)")
    raise DataError(
        f"{storage.uri()} was trained on the data at {pinned.source}, which are not there on "
        f"{socket.gethostname()} ({DATA_INDEX_FILE} pins them). If they moved, run the run's "
        f"`dbparallel train` command with run.dir={shell_path(storage.uri())} "
        f"data.path=<their new place>: it checks they are the same rows and pins them there "
        f"(with every block done it trains nothing, it only assembles). On a cluster, every "
        f"node must see them at that path (or give data.path as an object-store URI)")


def _reachable(index: DataIndex) -> bool:
    """Whether the index's first shard is where it says (one listing; a store that does not
    answer now counts as there: the readers' own retries decide)."""
    from dbparallel.data.tables import resolve_path

    shard = next(s for shards in index.splits.values() for s in shards)
    try:
        fs, path = resolve_path(shard.uri)
        return fs.get_file_info(path).type != pafs.FileType.NotFound
    except (OSError, DataError):
        return True


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
