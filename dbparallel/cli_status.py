"""``dbparallel status RUN_DIR``: where a run stands, from its run directory alone
(training/status.py), as a table or as JSON."""

from __future__ import annotations

import argparse
import json

from dbparallel.cli_data import RUN_DIR_HELP, run_dir_argument
from dbparallel.config import bytes_text
from dbparallel.runtime.metrics import series_line
from dbparallel.shell import shell_path
from dbparallel.training.failure import failed_when
from dbparallel.training.report import REPORT_REMEDY
from dbparallel.training.running import stopped_by
from dbparallel.training.status import BlockStatus, RunStatus


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def metric_text(key: str, value: float) -> str:
    """An assembly metric as `status` and a run's summary print it: bytes (a ``key`` with
    ``_bytes``) as bytes, whole numbers (counts, steps) in full, not ``1e+04``, others to 4
    digits."""
    if "_bytes" in key:
        return bytes_text(value)
    return f"{int(value):,}" if float(value).is_integer() and abs(value) >= 1 \
        else f"{value:.4g}"


def _ago(seconds: float | None) -> str:
    from dbparallel.training.progress import duration

    return "-" if seconds is None else f"{duration(seconds)} ago"


def _row(b: BlockStatus) -> list[str]:
    gone = " (its process is gone)" if b.writer_alive is False else ""
    gone = " (its process is gone; its driver runs)" if b.held_by_driver else gone
    driver = f" (driver {b.driver})" if b.driver else ""
    writer = f"{b.writer}{driver}, renewed {_ago(b.lease_age_s)}{gone}" if b.writer else "-"
    step = b.logged_step or 0
    return [str(b.block), b.state,
            f"{step:,} (past {b.steps:,})" if step > b.steps else f"{step:,}/{b.steps:,}",
            "-" if b.checkpoint_step is None else f"{b.checkpoint_step:,}",
            _num(b.loss), _num(b.heldout_loss),
            "-" if b.samples_per_s is None else f"{b.samples_per_s:,.0f}",
            _ago(b.logged_age_s), str(b.restarts), writer]


def _assembling(status: RunStatus) -> str:
    """The line of the process assembling the blocks (assembling.json): the writer column's
    host/pid, when it began, and, where it is gone, what assembles them again."""
    who = status.assembler + (" (the Ray run's driver)" if status.assembler_driver else "")
    if status.assembler_alive is False:
        gone = ("has not renewed its record within its train.lease_timeout_s (so it is "
                "counted as gone)" if status.assembler_lapsed
                else "no longer runs (killed outright: a stop removes its record)")
        return (f"assembly cut short: {who} began it {_ago(status.assembling_age_s)} and "
                f"{gone}; {REPORT_REMEDY}")
    elsewhere = (" (of another machine or container: whether it still runs cannot be asked "
                 "from here)" if status.assembler_alive is None else "")
    return f"assembling: {who}, begun {_ago(status.assembling_age_s)}{elsewhere}"


def _stops(status: RunStatus, who: str) -> str:
    """What stops the process ``who`` (host/pid) of a ``running:`` line: `dbparallel stop`,
    run on its host where that is another machine or container."""
    return stopped_by("`dbparallel stop`",
                      who.rpartition("/")[0] if who in status.elsewhere else "")


def render(status: RunStatus) -> str:
    """The text ``dbparallel status`` prints."""
    head = ["block", "state", "step", "checkpoint", "loss", "heldout", "samples/s",
            "last line", "restarts", "writer"]
    rows = [head, *(_row(b) for b in status.blocks)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head) - 1)]
    count = len(status.blocks)
    lines = [f"{status.run_dir}: {status.task}, {count} block{'s' * (count != 1)}, "
             f"{status.state}"]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
              for r in rows]
    if status.run_id:
        lines.append(series_line(status.run, status.run_id))
    if status.assembly:
        scores = ", ".join(f"{k} {metric_text(k, v)}" for k, v in status.assembly.items()
                           if k not in ("step", "wall_s") and isinstance(v, (int, float)))
        step = status.assembly.get("step")
        at = f" (step {step:,})" if isinstance(step, int) else ""
        lines.append(f"latest assembly{at}: {scores}")
    if status.assembler:
        lines.append(_assembling(status))
    # a finished run's process keeps its final scores served a while (metrics.linger_s)
    serving = ", or its run is finished and it still serves the final scores (metrics.linger_s)"
    lines += [f"running: {who} (a --local process between blocks, or still checking the data"
              f"{serving * status.report}: it holds no block's lease now; "
              f"{_stops(status, who)})"
              for who in status.runners]
    lines += [f"running: {who} (the Ray run's driver: no block process of it writes now; it "
              f"checks the data on the cluster, waits for the cluster to place the blocks, or "
              f"starts their processes{serving * status.report}; {_stops(status, who)})"
              for who in status.drivers]
    if status.report_problem:
        lines.append(status.report_problem)
    else:
        lines.append(f"report.json: written {_ago(status.report_age_s)}" if status.report else
                     "report.json: not yet (written once every block is done and assembled)")
    lines += [f"block {b.block}: {b.problem}" for b in status.blocks if b.problem]
    lines += [f"block {b.block}: done at step {b.checkpoint_step:,}, past the {b.steps:,} steps "
              f"asked now (train.steps, train.block_steps): it trains no more, and its weights "
              f"are those of step {b.checkpoint_step:,}"
              for b in status.blocks
              if b.state == "done" and b.checkpoint_step is not None
              and b.checkpoint_step > b.steps]
    lines += [f"block {b.block}: its process is gone, but its run's driver (pid "
              f"{b.driver.rpartition('/')[2]} on {b.driver.rpartition('/')[0]}) still runs on "
              f"this machine (it assembles the blocks, trains others, or starts the block's "
              f"process again): a rerun of the block is refused until that driver ends (let it "
              f"end, or stop it: `dbparallel stop {shell_path(status.run_dir)}`, or `ray job "
              f"stop` for a submitted job)"
              for b in status.blocks if b.state == "held by its driver"]
    lines += [f"block {b.block} failed {failed_when(b.failed_step, b.failed_after)} "
              f"({_ago(b.failed_age_s)}): {b.failure}"
              for b in status.blocks if b.failure]
    lines += [f"problem: {p}" for p in status.problems]
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    import dbparallel

    status = dbparallel.status(args.run_dir)
    print(json.dumps(status.to_json(), indent=2) if args.json else render(status))
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """The ``status`` subcommand, on ``sub``."""
    s = sub.add_parser("status", help="where a run stands: each block's state, step, loss and "
                       "writer, and its latest assembly, read from the run directory alone "
                       "(also while it trains, also on object storage)")
    s.add_argument("run_dir", metavar="RUN_DIR", type=run_dir_argument, help=RUN_DIR_HELP)
    s.add_argument("--json", action="store_true",
                   help="print the status as one JSON object (dbparallel.status(...).to_json())")
    s.set_defaults(func=cmd_status)
