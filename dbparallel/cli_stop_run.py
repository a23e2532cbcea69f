"""``dbparallel stop RUN_DIR [--wait S]``: stop the processes that train a run's blocks, found
from its run directory (training/stop_run.py), with SIGTERM: each stops where it is and
releases its leases (cli_stop.py is how it takes the signal), and the same ``train`` command
resumes the run. A run still checking its data (``--local``, or a Ray run's driver) has
written no config.yaml yet: its RUN_DIR holds only its process's record, which is enough."""

from __future__ import annotations

import argparse
import math

from dbparallel.cli_data import RUN_DIR_HELP, run_dir_argument
from dbparallel.config import CONFIG_FILE
from dbparallel.errors import RunDirError, UserError
from dbparallel.shell import resubmit_line, shell_path
from dbparallel.training.assembling import ASSEMBLING_FILE
from dbparallel.training.running import blocks_text
from dbparallel.training.stop_run import Hold
from dbparallel.training.storage import Storage

WAIT_S = 60.0  # the longest --wait's default waits for the processes signalled to stop
EXIT_HELD = 1  # a block is still held when the command ends


ASSEMBLY = "the run's assembly"  # what a run's assembling process is named by
RUN = "the run"  # and a --local process that runs it, holding neither a lease nor that


def _named(holds: list[Hold]) -> str:
    """``blocks 0, 1``, ``the run's assembly`` or both, of what ``holds`` hold; ``the run``
    (``the run (its blocks 0, 1)`` for a --block process) of a --local process's record."""
    numbers = [h.block for h in holds if h.block is not None]
    said = [blocks_text(numbers)] if numbers else []
    said += [ASSEMBLY] * any(h.record == ASSEMBLING_FILE for h in holds)
    runs = [h for h in holds if h.block is None and h.record != ASSEMBLING_FILE]
    said += [RUN + (f" (its {blocks_text(h.blocks)})" if h.blocks else "") for h in runs]
    return " and ".join(said)


def _who(hold: Hold) -> str:
    """The process that trains ``hold``'s block, for a line of what was done."""
    if hold.ray_driver:
        return f"the Ray run whose driver is pid {hold.pid} on {hold.host}"
    return f"pid {hold.pid} on {hold.host}"


def _told(hold: Hold, run_dir: str) -> str:
    """The line of a block (or assembly) ``dbparallel stop`` sends nothing to."""
    said = f"{_named([hold])}: "
    held = "held" if hold.block is not None else "run"
    if hold.kind == "damaged":
        return said + hold.said
    if hold.kind == "gone" and hold.driver:
        return said + (f"already stopped: its Ray run's driver (pid {hold.pid} on {hold.host}) "
                       f"and block process (pid {hold.holder_pid}) no longer run it (a rerun "
                       f"takes the lease over at once); nothing signalled")
    if hold.kind == "gone":
        return said + (f"already stopped: {_who(hold)}, which held its lease, no longer runs "
                       f"it (a rerun takes the lease over at once); nothing signalled")
    if hold.kind == "lapsed":
        what = "lease" if hold.block is not None else "record"
        return said + (f"counted as stopped: its {what} lapsed (renewed {hold.age_s:.0f} s ago "
                       f"by pid {hold.holder_pid} on {hold.host}, past "
                       f"its writer's train.lease_timeout_s={hold.timeout_s:g} s); nothing "
                       f"signalled")
    if hold.kind == "ending":
        return said + (f"its Ray run's driver (pid {hold.pid} on {hold.host}) is gone; its "
                       f"block process, pid {hold.holder_pid}, ends by itself")
    if hold.kind == "unknown":
        return said + (f"{held} by {_who(hold)}, but /proc does not say whether that pid is "
                       f"still its process: nothing signalled; stop it yourself (`kill "
                       f"{hold.pid}`)")
    assert hold.kind == "elsewhere", hold.kind
    if hold.ray_driver:
        return said + (f"{held} by {_who(hold)}, of another machine or container, which "
                       f"cannot be signalled from here: run `dbparallel stop "
                       f"{shell_path(run_dir)}` on {hold.host} (or `kill {hold.pid}` there), or "
                       f"`ray job stop` for a submitted job")
    return said + (f"{held} by {_who(hold)}, of another machine or container, which cannot be "
                   f"signalled from here: run `dbparallel stop {shell_path(run_dir)}` on "
                   f"{hold.host} (or `kill {hold.pid}` there)")


def _waited(hold: Hold, released: bool, ended: bool, wait_s: float) -> str:
    """The line of a block (or assembly) waited for, once its process ended or the wait ran
    out."""
    said = f"{_named([hold])}: "
    who = (f"its block process (pid {hold.holder_pid})" if hold.kind == "ending"
           else _who(hold))
    if hold.block is None:  # its record is no lease: a stale one is written over
        return said + ("stopped" if ended else f"{who} still runs after {wait_s:g} s, which "
                       f"may still be cleaning up")
    if ended:
        return said + ("stopped, its lease released" if released else
                       "stopped; its process ended without releasing its lease (a rerun on "
                       "this machine takes it over at once)")
    if released:
        return said + f"its lease released; {who} still runs after {wait_s:g} s (its cleanup)"
    return said + (f"still held after {wait_s:g} s by {who}, which may still be cleaning up; "
                   f"`dbparallel status` shows when it has stopped")


def _runners_only(run_dir: str) -> list[Hold]:
    """The processes recorded running the run in ``run_dir`` (--local ones, Ray runs'
    drivers), which is no run directory yet (they check the data before they write its
    config.yaml); none where it cannot be read either."""
    from dbparallel.training.stop_run import find_runners
    from dbparallel.training.storage import reach

    try:
        return find_runners(reach(run_dir))
    except (OSError, RunDirError):
        return []


def cmd_stop(args: argparse.Namespace) -> int:
    from dbparallel.training.run_files import run_config
    from dbparallel.training.stop_run import (
        find_assembly,
        find_holds,
        find_runners,
        ray_job_argv,
        send_sigterm,
        wait_ended,
    )

    if math.isnan(args.wait) or args.wait < 0:
        raise UserError(f"--wait {args.wait:g}: seconds to wait, 0 or more")
    damaged = False
    try:
        cfg = run_config(args.run_dir)
    except RunDirError as err:  # no config.yaml yet: a run may still be checking its data
        holds = _runners_only(args.run_dir)
        if not holds:
            raise
        storage = Storage(args.run_dir)
        damaged = storage.exists(CONFIG_FILE)  # unreadable: its runners are stopped all the same
        if damaged:
            print(err)
    else:
        storage = Storage(args.run_dir)
        holds = find_holds(storage, cfg)
        assembly = find_assembly(storage)  # a --local run assembling its blocks holds no lease
        holds += [assembly] if assembly is not None else []
        named = {h.process for h in holds if h.kind != "damaged"}
        # a --local process between two blocks; a Ray run's driver before its actors hold
        # their leases (its leases name it as their driver: signalled once, for them)
        holds += [h for h in find_runners(storage)
                  if h.kind == "damaged" or h.process not in named]
    if not holds:
        print(f"{args.run_dir}: no block's write lease is held: nothing to stop")
        return 0
    jobs = {h.process: ray_job_argv(h.pid) for h in holds if h.kind == "signal"}  # while
    sent = send_sigterm(holds)  # /proc has them
    still_held = False
    for process, why in sent.items():
        mine = [h for h in holds if h.kind == "signal" and h.process == process]
        said = f"{_named(mine)}: {_who(mine[0])} "
        verbs = ["trains"] * any(h.block is not None for h in mine) \
            + ["assembles"] * any(h.record == ASSEMBLING_FILE for h in mine) \
            + ["runs"] * any(h.block is None and h.record != ASSEMBLING_FILE for h in mine)
        said += " and ".join(verbs) + " "
        said += "them" if len(mine) > 1 else "it"
        if why:
            still_held = True
            said += f": SIGTERM not sent ({why}): run this as that process's user"
        else:
            said += ": SIGTERM sent" + (" to the driver" if mine[0].ray_driver else "")
        print(said)
    for hold in holds:
        if hold.kind != "signal":
            print(_told(hold, args.run_dir))
            still_held |= hold.kind in ("elsewhere", "unknown", "damaged")
    waiting = [h for h in holds if h.kind == "ending" or h.kind == "signal" and not sent[
        h.process]]
    if waiting and args.wait > 0:
        pids = sorted({h.holder_pid if h.kind == "ending" else h.pid for h in waiting}, key=int)
        print(f"waiting for pid{'s' * (len(pids) > 1)} {', '.join(pids)} to stop"
              + ("" if math.isinf(args.wait) else f" (up to {args.wait:g} s)") + " ...",
              flush=True)
        states = wait_ended(storage, waiting, args.wait)
        for hold, state in zip(waiting, states, strict=True):
            print(_waited(hold, *state, args.wait))
        still_held |= not all(released or ended for released, ended in states)
    stopped = {h.process for h in holds if h.kind == "signal" and not sent[h.process]}
    for argv in sorted({tuple(argv) for p in stopped if (argv := jobs[p])}):
        print(resubmit_line(argv))  # a Ray job's entrypoint: the job ends with it
    if any(not jobs[p] for p in stopped):
        print("the same train command resumes the run" + (f" once its {CONFIG_FILE} is "
                                                          f"restored" if damaged else ""))
    return EXIT_HELD if still_held else 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """The ``stop`` subcommand, on ``sub``."""
    s = sub.add_parser(
        "stop", help="stop the processes that train a run's blocks (their write leases name "
        "them) or assemble them: SIGTERM to each --local process and each Ray run's driver "
        "of this machine; the same train command resumes the run",
        description="Send SIGTERM, once, to each process of this machine (and pid namespace) "
        "that holds a block's write lease: a --local or --local --block process, or the "
        "driver of a Ray run (which stops its block processes), also one started from "
        "Python (dbparallel.train, where its program left SIGTERM's default or ray.init's "
        "handler); and to the "
        "process assembling the blocks (--local, or a Ray run's driver), recorded in "
        "the run directory; and to a --local process or a Ray run's driver that holds "
        "neither, while it checks the data (before the run directory has a config.yaml), "
        "is between two blocks, or (a driver) waits for the cluster to place its blocks or "
        "starts their processes, recorded there too. Each stops where it is and releases "
        "its leases, as on Ctrl-C; "
        "the same train command resumes the run (a Ray job's driver: the job resubmitted, "
        "its command named). Nothing else is ever signalled, and never "
        "SIGKILL. A holder of another machine or container is named with the host and the "
        "command to run there. Exit codes: 0 nothing held, or every holder signalled (and, "
        "with --wait, ended or its leases released); 1 a block is still held, or the run's "
        "assembly or a process recorded running it still runs: it is on another machine or "
        "container, could not be signalled, did not stop within --wait, or its lease (or "
        "record) is damaged (each said in a line); 2 RUN_DIR is not a run directory, and no "
        "run is starting in it. A process still "
        "cleaning up after a stop says so on a second SIGTERM, and quits at once on a "
        "third, without releasing its leases (a rerun on its machine takes them over at "
        "once): give a long cleanup --wait rather than running stop again.")
    s.add_argument("run_dir", metavar="RUN_DIR", type=run_dir_argument, help=RUN_DIR_HELP)
    s.add_argument("--wait", type=float, default=WAIT_S, metavar="SECONDS",
                   help=f"wait this long at most for the processes signalled to stop and "
                        f"release their leases, and say of each block how it stopped (default "
                        f"{WAIT_S:g}; 0: do not wait; inf: until they do)")
    s.set_defaults(func=cmd_stop)
