"""The snapshots a composed network is built from: one per block, checked to belong together."""

from __future__ import annotations

import time

from dbparallel.config import Config, identity_diff, to_dict
from dbparallel.core.partition import Partition
from dbparallel.errors import RunDirError
from dbparallel.shell import shell_path
from dbparallel.tasks import build_task
from dbparallel.training.checkpoint import BlockCheckpoints, first_save_cut_short
from dbparallel.training.storage import Storage

RETRIES, RETRY_WAIT_S = 3, 0.5  # re-reads of a manifest whose snapshot moved under the reader


def load_snapshots(cfg: Config, storage: Storage, step: int | None = None) -> list[dict]:
    """The latest good snapshot of every block (the one of ``step`` if given); refuses
    missing or disagreeing blocks."""
    checkpoints = [BlockCheckpoints(storage, b) for b in range(cfg.model.blocks)]
    # the entries with their checksums: a snapshot of the same step written again (a block
    # that resumed from an older training state, or restored an unreadable snapshot) is the
    # same file with another checksum
    tried = [c.manifest()["snapshot"] for c in checkpoints]
    snapshots = [c.load_latest("snapshot", step) for c in checkpoints]
    for _ in range(RETRIES):  # a block training meanwhile may have replaced the snapshot it
        # listed: read its manifest again, and the snapshots of a block whose list changed
        # (one that stays listed and unreadable is corrupt: read again, it is warned of again)
        missing = [b for b, s in enumerate(snapshots) if s is None and tried[b]]
        if not missing or step is not None:
            break
        time.sleep(RETRY_WAIT_S)
        for b in missing:
            if (now := checkpoints[b].manifest()["snapshot"]) != tried[b]:
                tried[b], snapshots[b] = now, checkpoints[b].load_latest("snapshot")
    missing = [b for b, s in enumerate(snapshots) if s is None]
    if missing and step is not None:
        kept = {b: checkpoints[b].steps("snapshot") for b in missing}
        raise RunDirError(f"{storage.uri()}: block(s) {missing} have no snapshot of step {step} "
                          f"(kept: {kept}); train.keep_snapshots sets how many are kept")
    unreadable = {b: files for b in missing
                  if (files := checkpoints[b].listed("snapshot"))}
    if unreadable:
        raise RunDirError(f"{storage.uri()}: no snapshot of block(s) {list(unreadable)} can be "
                          f"read ({_by_block(unreadable)}: missing or corrupt); run the run's "
                          f"`dbparallel train` command again: it writes a block's snapshot "
                          f"again from its training state")
    lost = {b: files for b in missing if (files := checkpoints[b].unlisted())
            and not first_save_cut_short(files)}
    if lost:
        raise RunDirError(f"{storage.uri()}: the manifest of block(s) {list(lost)} is missing "
                          f"(deleted?) while their checkpoint files are there "
                          f"({_by_block(lost)}); restore it from a copy, or train with "
                          f"train.on_unreadable=restart to train them again from step 0")
    if missing:
        raise RunDirError(f"{storage.uri()}: block(s) {missing} have no snapshot yet; "
                          + _while_training(cfg, storage))
    partition = build_task(cfg).partition.to_json()
    for b, snap in enumerate(snapshots):
        meta = snap["meta"]
        if meta["block"] != b or meta["task"] != cfg.task:
            raise RunDirError(f"block {b}: snapshot is of block {meta['block']} of task "
                              f"{meta['task']!r}, expected block {b} of task {cfg.task!r}")
        keys = identity_diff(meta["config"], to_dict(cfg))
        if keys:
            raise RunDirError(f"block {b}: trained with other values of {', '.join(keys)}")
        if not Partition.agree(meta["partition"], partition):
            raise RunDirError(f"block {b}: its noise partition {meta['partition']['ranges']} "
                              f"disagrees with {partition['ranges']}")
    return snapshots


def _while_training(cfg: Config, storage: Storage) -> str:
    """What to do about blocks without a snapshot: wait, where a process trains the run now
    (its blocks train one after another in local mode, or in waves), else train them."""
    from dbparallel.training.status import run_status

    try:
        status = run_status(storage, cfg)
    except RunDirError:  # a damaged file: the command that trains the run says which
        status = None
    training = [b.block for b in status.blocks if b.state == "training"] if status else []
    if not training:
        return f"train them first (dbparallel train ... run.dir={shell_path(storage.uri())})"
    return (f"the run is training ({status.state}; block(s) {training} now), and a block's "
            f"first snapshot comes after train.checkpoint_every={cfg.train.checkpoint_every} "
            f"of its steps: wait for it (dbparallel status {shell_path(storage.uri())})")


def _by_block(files: dict[int, list[str]]) -> str:
    """``block b: file, file; block c: ...`` for messages."""
    return "; ".join(f"block {b}: {', '.join(f)}" for b, f in files.items())
