"""A block's start from its checkpoints: the newest readable training state, checked against
the config, with what to do when none can be read (train.on_unreadable); and the line a run
that resumes prints first, of the step each of its blocks goes on from."""

from __future__ import annotations

import logging

from dbparallel.config import Config, identity_diff, to_dict
from dbparallel.errors import RunDirError
from dbparallel.training.block_trainer import BlockTrainer
from dbparallel.training.checkpoint import BlockCheckpoints, first_save_cut_short
from dbparallel.training.data_order import DataOrder
from dbparallel.training.lease import BlockLease
from dbparallel.training.storage import DamagedFile, Storage

log = logging.getLogger(__name__)


def resume(trainer: BlockTrainer, checkpoints: BlockCheckpoints, cfg: Config,
           lease: BlockLease | None, order: DataOrder | None = None) -> int:
    """Load the block's newest readable training state into ``trainer``, and the position
    of its next batch into ``order``; returns its step (0: from the start). ``lease``: the
    writer's (None for a replica that only trains), which also writes again a snapshot of
    that step that cannot be read."""
    try:
        state = checkpoints.load_latest("state")
    except DamagedFile as err:  # its manifest: no checkpoint can be found
        _unreadable(checkpoints, cfg, f"{err.where} is damaged ({err.why})", lease)
        return 0
    if state is None:
        files = checkpoints.listed("state")  # listed, none readable: never start over
        if files:                                # silently
            _unreadable(checkpoints, cfg, f"none of its checkpoints can be read "
                                          f"({', '.join(files)}: missing or corrupt)", lease)
        unlisted = checkpoints.unlisted()  # nor over files its lost manifest listed
        if first_save_cut_short(unlisted):
            log.warning("block %d: %s was written, but the block's first checkpoint stopped "
                        "before its manifest listed it (the process was stopped there): "
                        "trains from step 0", trainer.block, unlisted[0])
        elif unlisted:
            _unreadable(checkpoints, cfg, f"{checkpoints.storage.uri(checkpoints.manifest_path)} "
                                          f"is missing (deleted?) while its directory holds "
                                          f"checkpoint files ({', '.join(unlisted)})", lease)
        return 0
    keys = identity_diff(state["meta"]["config"], to_dict(cfg))
    if keys:
        raise RunDirError(
            f"block {trainer.block}: the run directory was trained with other values "
            f"of {', '.join(keys)}; use a new run.dir or the original values")
    trainer.load_state_dict(state)
    log.info("block %d: resumed at step %d", trainer.block, trainer.step)
    if order is not None:
        _go_on_in_order(order, state, trainer.step)
    if lease is not None:
        _restore_snapshot(trainer, checkpoints, lease)
        _remove_orphans(checkpoints, lease)
        steps = cfg.train.steps_of(trainer.block)
        _said_schedule_changed(trainer, state, cfg)
        if trainer.step > steps:
            log.warning("block %d is at step %d, past the %d steps asked (train.steps, "
                        "train.block_steps): it trains no more, and its weights stay those of "
                        "step %d", trainer.block, trainer.step, steps, trainer.step)
    return trainer.step


def _go_on_in_order(order: DataOrder, state: dict, step: int) -> None:
    """Rebase ``order`` at the data position the checkpoint recorded: a batch size changed
    since goes on from the next row of the epoch. A checkpoint written before positions were
    recorded is at step times the batch size it trained with."""
    position = state.get("data_position")
    if position is None:
        then = (state["meta"]["config"].get("train") or {}).get("batch_size", order.batch_size)
        position = step * int(then)
    order.rebase(step, int(position))
    if order.position(step) != step * order.batch_size:
        log.info("block %d: goes on from row %d of its data order (epoch %d), where its "
                 "checkpoint of step %d stopped (train.batch_size=%d now)", order.block,
                 position % order.num_rows, position // order.num_rows, step,
                 order.batch_size)


def _said_schedule_changed(trainer: BlockTrainer, state: dict, cfg: Config) -> None:
    """Warn where a cosine schedule's length changed since the checkpoint: the rate goes on
    along the new curve, which the steps before never followed (a straight run of the new
    length would not match)."""
    then = state["meta"]["config"].get("train") or {}
    b, step = trainer.block, trainer.step
    steps = cfg.train.steps_of(b)
    before = then["block_steps"][b] if then.get("block_steps") else then.get("steps", steps)
    if "cosine" not in (cfg.train.lr_schedule, then.get("lr_schedule")) or before == steps \
            or step >= steps:
        return
    if step <= cfg.train.warmup_steps and then.get("warmup_steps") == cfg.train.warmup_steps:
        return  # every step so far was one of the warm-up, whose rate has no length in it
    log.warning("block %d: resumed at step %d of %d, which trained with %d steps "
                "(train.steps, train.block_steps) and train.lr_schedule=%s; from step %d its "
                "learning rate is %.3g, on the schedule of %d steps the earlier steps did not "
                "follow, so its weights differ from a run of %d steps from the start",
                b, step, steps, before, then.get("lr_schedule", cfg.train.lr_schedule),
                step + 1, trainer.lr_at(step), steps, steps)


def _restore_snapshot(trainer: BlockTrainer, checkpoints: BlockCheckpoints,
                      lease: BlockLease) -> None:
    """A snapshot of the resumed step that is listed but cannot be read (corrupt, missing),
    or that was never written (the process stopped between the training state and the
    snapshot of its step), is written again from the training state, which holds the same
    EMA weights: assembly reads snapshots only, so a finished block would otherwise stay
    without one, or be assembled from the older snapshot before it."""
    step = trainer.step
    listed = checkpoints.steps("snapshot")
    if step in listed:
        if checkpoints.readable("snapshot", step):
            return
    elif any(s > step for s in listed):  # of a timeline this resume replaces: the block
        return                            # trains past them again, writing its own
    lease.check()
    checkpoints.save("snapshot", step, trainer.snapshot())
    how = ("again (it could not be read)" if step in listed else
           "(its process stopped before writing it)")
    log.warning("block %d: wrote its snapshot of step %d from its training state %s",
                trainer.block, step, how)


def _remove_orphans(checkpoints: BlockCheckpoints, lease: BlockLease) -> None:
    """Delete the checkpoint files the manifest no longer lists (a writer stopped before it
    deleted them): else each stays, unread, for as long as the run directory."""
    orphans = checkpoints.orphans()
    if not orphans:
        return
    lease.check()  # a fenced-off writer deletes nothing
    for rel in orphans:
        checkpoints.storage.delete(rel)
    log.info("block %d: deleted %s, which its manifest no longer lists", checkpoints.block,
             ", ".join(orphans))


def _unreadable(checkpoints: BlockCheckpoints, cfg: Config, why: str,
                lease: BlockLease | None) -> None:
    """Refuse to start over (train.on_unreadable=refuse), or discard the block's
    checkpoints and train it from step 0 (restart): the writer (``lease``) discards them, a
    replica that only trains starts from step 0 beside it."""
    b = checkpoints.block
    if cfg.train.on_unreadable != "restart":
        raise RunDirError(
            f"block {b}: {why}; use a new run.dir, or train.on_unreadable=restart to "
            f"discard its checkpoints and train block {b} again from step 0")
    if lease is None:
        return
    lease.check()  # a fenced-off writer deletes nothing
    discarded = checkpoints.discard()
    log.warning("block %d: none of its checkpoints can be read; train.on_unreadable=restart "
                "discards %s and trains it again from step 0", b, ", ".join(discarded))


def resume_line(storage: Storage, cfg: Config, blocks: list[int]) -> str | None:
    """What a run that resumes prints first: the step each of ``blocks`` goes on from, its
    newest checkpoint's (None where none has one: a fresh start). Blocks in a row at one step
    are told together (``blocks 0-3 at step 200``)."""
    at: list[tuple[int, int]] = []
    for b in blocks:
        try:
            steps = BlockCheckpoints(storage, b).steps("state")
        except RunDirError:  # a damaged manifest: the block's own start says what it does
            steps = []
        at.append((b, steps[-1] if steps else 0))
    if not any(step for _, step in at):
        return None
    each = {cfg.train.steps_of(b) for b in blocks}
    groups: list[list[int]] = []  # [first, last, step, steps]
    for b, step in at:
        steps = cfg.train.steps_of(b)
        if groups and groups[-1][1] == b - 1 and groups[-1][2:] == [step, steps]:
            groups[-1][1] = b
        else:
            groups.append([b, b, step, steps])
    told = ", ".join(
        (f"block {first}" if first == last else f"blocks {first}-{last}")
        + (f" at step {step:,}" if step else " from the start")
        + (f" (done, past {steps:,})" if step > steps else
           (f" of {steps:,}" if len(each) > 1 else "") + (" (done)" if step == steps else ""))
        for first, last, step, steps in groups)
    of = f" ({each.pop():,} steps a block)" if len(each) == 1 else ""
    return f"resuming {storage.uri()}{of}: {told}"
