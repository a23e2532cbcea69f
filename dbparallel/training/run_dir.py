"""Opening a run directory: the resolved config is written once and guards every resume."""

from __future__ import annotations

import dataclasses
import logging
import os

from dbparallel.config import (
    CONFIG_FILE,
    Config,
    changed_settings,
    data_name,
    dump_yaml,
    identity,
    identity_diff,
    same_local_path,
    to_dict,
)
from dbparallel.data.shards import DataIndex
from dbparallel.errors import RunDirError, UserError
from dbparallel.shell import shell_path
from dbparallel.training.data_pin import DATA_INDEX_FILE, VOCAB_FILE, refuse_other_data
from dbparallel.training.kept_settings import kept_settings, listed, what_records, with_stored
from dbparallel.training.run_files import MAX_LISTED, stored_config
from dbparallel.training.run_id import RUN_ID_FILE
from dbparallel.training.running import RUNNING_DIR
from dbparallel.training.storage import Storage, reach

# what a run writes at its root (and everything under blocks/): a command's output never
# replaces one of them
RUN_FILES = (CONFIG_FILE, DATA_INDEX_FILE, VOCAB_FILE, RUN_ID_FILE, "report.json",
             "assembly.jsonl", "diagnostics.json", "curves.png", "samples.png", "confusion.json",
             "samples.txt", "samples.safetensors", "assembler_restarts.json")
# its folders: the blocks' checkpoints (a copy without config.yaml still resumes, checked
# against their config), the processes running it, Ray Train's records of replica groups
RUN_FOLDERS = ("blocks", RUNNING_DIR, "ray_train")
log = logging.getLogger(__name__)


def check_out_file(out: str, name: str = "--out") -> None:
    """UserError naming ``name`` where ``out`` is no file to write: empty, a folder, or a file
    a run directory wrote (RUN_FILES at its root, anything under blocks/); another file in a
    run directory, e.g. an earlier export, may be replaced. URIs are not checked."""
    from pathlib import Path

    if not out.strip():
        raise UserError(f"{name}: give the path of the file to write")
    if "://" in out:
        return
    path = Path(out).resolve()
    try:
        folder, exists = path.is_dir(), path.exists()
    except OSError as err:  # a name too long to be a file's
        raise UserError(f"{name} {out}: cannot be written ({err.strerror})") from None
    if folder:
        raise UserError(f"{name} {out}: is a folder; name a file (in it)")
    if not exists:
        return
    for parent in path.parents:
        if (parent / CONFIG_FILE).is_file() and (parent / DATA_INDEX_FILE).is_file():
            inside = path.relative_to(parent).parts
            if inside[0] == "blocks" or (len(inside) == 1 and inside[0] in RUN_FILES):
                raise UserError(f"{name} {out}: is a file of the run directory {parent}, "
                                f"which writing would replace; choose another name")


def open_run(cfg: Config, blocks: list[int] | None = None) -> Storage:
    """Storage of ``cfg``'s run directory; refuses a directory trained with another network,
    or one whose ``blocks`` (default: all) another live process trains, before writing.
    A ``data.path`` that spells the stored one's local path differently (``./data/x``, its
    absolute path) is set back to the stored spelling in ``cfg``: every checkpoint of the run
    carries one config hash. A rerun in which no block of the run (``blocks`` or not) trains
    a further step keeps the stored values of changed train.* settings in config.yaml, which
    says how the weights were trained (it still records the others, e.g. sample.*)."""
    refuse_a_passing_run_dir(cfg)
    storage = reach(cfg.run_dir, f"run.dir={cfg.run_dir}")
    try:
        storage.makedirs()
    except OSError as err:  # a file in the way, a read-only or missing mount
        raise RunDirError(f"run.dir={cfg.run_dir}: cannot create the run directory "
                          f"({getattr(err, 'strerror', None) or err})") from None
    _refuse_other_config(storage, cfg)
    _refuse_live_writers(storage, cfg, blocks)
    if not storage.exists(CONFIG_FILE):
        _look_before_starting(storage)
        _tell_earlier_default(cfg)
        if storage.create_bytes(CONFIG_FILE, dump_yaml(cfg).encode()):
            return storage
        # another process started the run since (--block processes of a new directory at
        # once): checked against its config.yaml as any resume, never written over
        _refuse_other_config(storage, cfg)
        _refuse_live_writers(storage, cfg, blocks)
    # config.yaml is there: this run's before, or another process's just now
    before = stored_config(storage)
    stored = (before.get("data") or {}).get("path")
    if stored != cfg.data.path and same_local_path(stored, cfg.data.path):
        cfg.data.path = stored
    changed = changed_settings(before, cfg)
    kept = kept_settings(storage, cfg, changed)
    if changed:
        log.warning("resuming %s with other settings: %s (they do not change the network; "
                    "%s)", storage.uri(), listed(changed, MAX_LISTED), what_records(changed, kept))
    storage.write_text(CONFIG_FILE, dump_yaml(with_stored(cfg, kept)))
    return storage


def _look_before_starting(storage: Storage) -> None:
    """A new run's directory (no config.yaml, no checkpoint) that holds files of a run's names
    (report.json, samples.png) is refused: the run would write over them. Other files, not
    hidden, are told of: the run's files go beside them (``run.dir=.`` in a project's
    folder). A run's copy without its config.yaml resumes (checked against its checkpoints)."""
    from dbparallel.training.checkpoint import any_checkpoint

    if any_checkpoint(storage):
        return
    found = [n for n in storage.listdir("")
             if not n.startswith(".") and n not in ("lost+found", *RUN_FOLDERS)]
    ours = [n for n in found if n in RUN_FILES]
    if not found or CONFIG_FILE in found:  # another process started the run since
        return
    if ours:
        raise RunDirError(
            f"run.dir={storage.uri()} holds {', '.join(ours[:MAX_LISTED])} but no "
            f"{CONFIG_FILE}: not a run to resume, and a new run would write over them; give "
            f"another run.dir, or move them away")
    log.warning("run.dir=%s is not empty (%s%s): the run's files go beside them",
                storage.uri(), ", ".join(found[:MAX_LISTED]),
                f" and {len(found) - MAX_LISTED} more" if len(found) > MAX_LISTED else "")


EARLIER_DEFAULT = "runs/digits-dit"  # every run's directory while run.name had one default


def _tell_earlier_default(cfg: Config) -> None:
    """A new run in the default run directory of its data and task (run.name not given)
    whose network and data an earlier run trained in runs/digits-dit, the default of every
    task and data set before, is told where that run is: it would resume it with run.dir.
    (A Ray run's driver has made that default absolute: ``absolute_paths``.)"""
    default = f"runs/{cfg.run.name}"
    if (cfg.run.dir and not same_local_path(cfg.run.dir, default)) \
            or same_local_path(cfg.run_dir, EARLIER_DEFAULT) \
            or cfg.run.name != f"{data_name(cfg.data)}-{cfg.task}":
        return
    earlier = Storage(EARLIER_DEFAULT)
    try:
        stored = stored_config(earlier) if earlier.exists(CONFIG_FILE) else None
    except RunDirError:
        return
    if stored is None or identity_diff(stored, to_dict(cfg)):
        return
    was = (stored.get("data") or {}).get("path")
    if was != cfg.data.path and not same_local_path(was, cfg.data.path):
        return
    log.warning("%s holds a run of this network and data, from when it was the default "
                "run.dir of every task and data set; this run starts in %s: give "
                "run.dir=%s to resume that one instead", EARLIER_DEFAULT, cfg.run_dir,
                EARLIER_DEFAULT)


def refuse_another_network(cfg: Config) -> None:
    """The RunDirError ``open_run`` would raise for a run directory trained with another
    network (``identity_diff``: another data.tokenizer, model.hidden, ...), raised from its
    config alone, before the data are opened (a corpus tokenized for a run that is refused)."""
    refuse_a_passing_run_dir(cfg)
    _refuse_other_config(reach(cfg.run_dir, f"run.dir={cfg.run_dir}"), cfg)


def check_resumable(cfg: Config, index: DataIndex, blocks: list[int] | None = None) -> None:
    """The RunDirError ``open_run`` or ``pin_data`` would raise for ``cfg``'s run directory,
    ``index`` and ``blocks`` (default: all), raised now, without writing anything (a run that
    checks its data first)."""
    refuse_a_passing_run_dir(cfg)
    storage = reach(cfg.run_dir, f"run.dir={cfg.run_dir}")
    _refuse_other_config(storage, cfg)
    _refuse_live_writers(storage, cfg, blocks)
    refuse_other_data(storage, index, start=blocks is None, say=False)  # pin_data says it


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


def refuse_run_dir_in_data(cfg: Config) -> None:
    """RunDirError for a local run.dir inside the local folder of a data set read whole (a
    text corpus, every file under it; an image folder): the run's own files (samples.txt,
    curves.png, config.yaml, ...) would be data to its next run, which then refuses them or,
    finding the data changed, refuses to resume."""
    data = cfg.data
    if data.source not in ("text", "image_folder") or not data.path \
            or "://" in data.path or "://" in cfg.run_dir:
        return
    folder = os.path.realpath(os.path.expanduser(data.path))
    run = os.path.realpath(os.path.expanduser(cfg.run_dir))
    if not os.path.isdir(folder) or os.path.commonpath([folder, run]) != folder:
        return
    raise RunDirError(
        f"run.dir={cfg.run_dir} is inside data.path={data.path}, every file of which is read "
        f"as data (data.source={data.source}): the run's own files (samples, curves.png, "
        f"config.yaml) would be read as data by its next run; give a run.dir outside it")


def absolute_paths(cfg: Config) -> Config:
    """``cfg`` with a relative local run.dir and data.path made absolute from this process's
    working directory, for a Ray run (run.dir once ``refuse_a_passing_run_dir`` let it pass):
    its block processes work in their node's working directory (on a cluster this driver
    joined, where its `ray start` ran), in which a relative path names another directory. A
    job's data.path stays as given: every node has the job's copy of its working directory,
    where a relative one names the copy's data. A path from ``~`` stays as given too (each
    process that reads data.path expands it to its user's home; abspath would not)."""
    def relative(path: str) -> bool:
        return bool(path) and "://" not in path and not path.startswith("~") \
            and not os.path.isabs(path)

    run, data = cfg.run, cfg.data
    if relative(cfg.run_dir):
        run = dataclasses.replace(run, dir=os.path.abspath(cfg.run_dir))
    if relative(data.path) and RAY_PACKAGES not in os.getcwd():
        data = dataclasses.replace(data, path=os.path.abspath(data.path))
    return dataclasses.replace(cfg, run=run, data=data)


def _refuse_live_writers(storage: Storage, cfg: Config, blocks: list[int] | None) -> None:
    """A block another live process trains (its lease held, BlockLease.refuse_if_held), or
    another live process recorded running the run for one of ``blocks`` (running.py: also
    while it checks the data, is between two blocks or waits for placement), is refused here,
    in the driver, before this run writes config.yaml or starts anything; the block's own
    lease stays the guard against a race between two starting runs."""
    from dbparallel.training.lease import BlockLease
    from dbparallel.training.running import refuse_running

    for b in range(cfg.model.blocks) if blocks is None else blocks:
        BlockLease(storage, b, "", cfg.train.lease_timeout_s).refuse_if_held()
    refuse_running(storage, blocks, cfg.model.blocks)


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
            another = shell_path(_another_run_dir(storage, cfg, keys))
            from dbparallel.training.checkpoint import any_checkpoint

            if any_checkpoint(storage):
                raise RunDirError(
                    f"{storage.uri()} holds blocks trained with other values of "
                    f"{', '.join(keys)} ({values}{more}); resume with the same values or "
                    f"choose a new run.dir (e.g. run.dir={another})")
            # a run that stopped (or still starts) before any block saved a checkpoint: the
            # directory may belong to a live run that is still checking its data, so it is
            # never taken over; the user knows whether one is running
            raise RunDirError(
                f"{storage.uri()} was started with other values of {', '.join(keys)} "
                f"({values}{more}) and no block has saved a checkpoint yet; resume with the "
                f"same values, choose a new run.dir (e.g. run.dir={another}), or delete the "
                f"directory if no run uses it")


def _another_run_dir(storage: Storage, cfg: Config, keys: list[str]) -> str:
    """A run.dir to suggest to a run refused in ``storage`` (a run.name given names its runs
    whatever their data): beside it, named for the run's data where the data differ
    (``runs/ar-shakespeare-tiny-notes``), else numbered; on local storage, one not taken."""
    base, query, rest = storage.root.rstrip("/").partition("?")
    tag = data_name(cfg.data) if any(k.startswith("data.") for k in keys) else ""
    names = ([f"{base}-{tag}"] if tag else []) + [f"{base}-{tag + '-' if tag else ''}{n}"
                                                  for n in range(2, 100)]
    for name in names:
        if not storage.is_local or not os.path.exists(name):
            return name + query + rest
    return names[-1]


def _checkpointed_config(storage: Storage) -> dict | None:
    """The config a block's newest readable snapshot was trained with: a run directory whose
    config.yaml is missing (a partial copy) still refuses another network before it is
    written."""
    from dbparallel.training.checkpoint import run_checkpoints

    for checkpoints in run_checkpoints(storage):
        saved = checkpoints.load_latest("snapshot")
        if saved is not None:
            return saved["meta"]["config"]
    return None
