"""Reading a run directory that exists: the config it was trained with, and, where a path is
no run directory, what it is instead (a file, a directory a run is starting in, one inside a
run directory or holding some)."""

from __future__ import annotations

import os

from dbparallel.config import CONFIG_FILE, Config, from_dict, stored_dict
from dbparallel.errors import RunDirError, UserError
from dbparallel.shell import shell_path
from dbparallel.training.storage import DamagedFile, Storage, damaged, reach

MAX_LISTED = 4  # differing keys whose values a refusal prints; run directories one lists


def require_run_dir(storage: Storage, shown: str) -> None:
    """RunDirError unless ``storage`` holds a run directory (its config.yaml); ``shown``
    names it in the message (e.g. ``--against DIR``)."""
    if storage.exists(CONFIG_FILE):
        return
    if storage.is_local and not storage.exists(""):
        raise RunDirError(f"{shown}: no such directory")
    if storage.is_local and os.path.isfile(storage.path("")):
        raise RunDirError(f"{shown}: is a file, not a run directory (an export file holds the "
                          f"network alone, for load, eval, sample, generate and predict; this "
                          f"reads a run directory's training files)")
    starting = _starting(storage)
    if starting:
        raise RunDirError(f"{shown}: not a run directory yet (no {CONFIG_FILE}): {starting}")
    raise RunDirError(f"{shown}: not a run directory (no {CONFIG_FILE}){_runs_near(storage)}")


def _starting(storage: Storage) -> str:
    """Where a run is starting in ``storage`` (a --local process, or a Ray run's driver,
    records itself before its data check, and writes config.yaml after it:
    training/running.py), which process it is, for the message that refuses the directory;
    "" where none is."""
    import time

    from dbparallel.training.running import live_runners, stopped_by

    found = live_runners(storage, time.time())[0]
    if not found:
        return ""
    kind = "a --local run" if not any(r.driver for r in found) else \
        "a Ray run" if all(r.driver for r in found) else "a run"
    stop = f"`dbparallel stop {shell_path(storage.uri())}`"
    hosts = " and ".join(sorted({r.host for r in found if not r.here}))
    if not hosts or not any(r.here for r in found):
        how = stopped_by(stop, hosts)
    else:
        how = f"{stop} stops it here, and run on {hosts} (another machine or container) there"
    return (f"{kind} is starting in it ({', '.join(r.who for r in found)}), which checks its "
            f"data before it writes {CONFIG_FILE}; {how}")


def _runs_near(storage: Storage) -> str:
    """Where a local folder that is no run directory sits in one, or the run directories it
    holds (a few), for the message that refuses it; "" where neither."""
    if not storage.is_local:
        return ""
    for up in ("..", "../.."):  # blocks/, blocks/block_<b>/
        above = os.path.normpath(os.path.join(storage.root, up))
        if os.path.isfile(os.path.join(above, CONFIG_FILE)):
            shown = os.path.abspath(above) if above.startswith(".") else above
            return f"; it is inside the run directory {shown}"
    try:
        runs = sorted(e.name for e in os.scandir(storage.root)
                      if e.is_dir() and os.path.isfile(os.path.join(e.path, CONFIG_FILE)))
    except OSError:
        return ""
    if not runs:
        return ""
    shown = ", ".join(os.path.join(storage.root, r) for r in runs[:MAX_LISTED])
    more = f" and {len(runs) - MAX_LISTED} more" if len(runs) > MAX_LISTED else ""
    return f"; it holds the run directories {shown}{more}"


def stored_config(storage: Storage) -> dict:
    """The config dict a run directory was trained with; RunDirError naming config.yaml when
    it is damaged."""
    try:
        return stored_dict(storage.read_text(CONFIG_FILE))
    except DamagedFile:
        raise
    except ValueError as err:
        raise damaged(storage.uri(CONFIG_FILE), err) from None


def run_config(run_dir: str) -> Config:
    """The config a run directory was trained with (``run.dir`` pointing at it)."""
    storage = reach(run_dir)
    require_run_dir(storage, run_dir)
    from omegaconf.errors import OmegaConfBaseException

    try:
        cfg = from_dict(stored_config(storage))
    except (OmegaConfBaseException, UserError) as err:  # an edited key or value
        if isinstance(err, RunDirError):
            raise
        raise RunDirError(f"{storage.uri(CONFIG_FILE)}: " + " ".join(str(err).split()))\
            from None
    cfg.run.dir = run_dir
    return cfg
