"""Helpers of the tests that stop real training processes (``dbparallel stop``)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from dbparallel import cli
from dbparallel.config import dump_yaml, load_config
from dbparallel.training.assembling import ASSEMBLING_FILE
from dbparallel.training.holder import process_space
from dbparallel.training.running import RUNNING_DIR
from dbparallel.training.storage import Storage

HANG_S = 120  # a hang guard only, never a timing claim
ROOT = Path(__file__).resolve().parents[2]  # where the PAUSED process runs

# `dbparallel train ARGS` (or, given `python`, dbparallel.train(RECIPE) into RUN_DIR, ARGS
# being RECIPE RUN_DIR, what the call ended with printed as JSON) that stops short at a point
# (PAUSE) as a long data check or a slow block start would: there it writes the file MARK,
# then waits until it is stopped. Where the process is comes from the file, not from timing.
PAUSED = """
import json, sys, time
from pathlib import Path

import dbparallel
import dbparallel.runtime.local as local
import dbparallel.runtime.train as train
from dbparallel import cli

pause_at, mark, how, args = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4:]

def pause():
    mark.write_text("")
    time.sleep(600)
    sys.exit("not stopped")

if pause_at == "data check":  # the rows of a large data set decoded
    train.check_here = lambda cfg, index: pause()
else:  # block 1 about to start: block 0 trained, its lease released
    block_run = local.BlockRun
    local.BlockRun = lambda cfg, b, *rest: pause() if b == 1 else block_run(cfg, b, *rest)
if how == "command":
    sys.exit(cli.main(["train", *args]))
try:
    dbparallel.train(args[0], overrides={"run.dir": args[1], "metrics.port": 0}, local=True)
    print(json.dumps("returned"))
except dbparallel.Terminated as err:
    print(json.dumps(f"Terminated: {err}"))
"""


def paused(pause_at: str, mark: Path, how: str, *args: str) -> subprocess.Popen:
    """A PAUSED process stopping short at ``pause_at`` (``data check`` or ``block 1``),
    started by ``how`` (``command``: ``dbparallel train ARGS``; ``python``: dbparallel.train
    of the recipe ARGS[0] into the run directory ARGS[1])."""
    return subprocess.Popen([sys.executable, "-c", PAUSED, pause_at, str(mark), how, *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_paused(mark: Path, proc: subprocess.Popen) -> None:
    """Return once the PAUSED ``proc`` has written ``mark``, failing if it ends first."""
    _wait(mark.exists, proc, f"{mark} never written")


def _wait(done: Callable[[], bool], proc: subprocess.Popen, what: str) -> None:
    """Return once ``done()``, failing if ``proc`` ends first (or in HANG_S)."""
    deadline = time.monotonic() + HANG_S
    while proc.poll() is None and time.monotonic() < deadline:
        if done():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}; the process ended with {proc.poll()}")


def wait_training(block: Path, proc: subprocess.Popen) -> None:
    """Return once ``proc`` holds the lease of the block in folder ``block`` and has written
    a checkpoint (past its start, which test_reliability.py stops the same way), failing if
    ``proc`` ends."""
    lease, manifest = block / "lease.json", block / "manifest.json"
    _wait(lambda: manifest.exists() and bool(json.loads(lease.read_text())["holder"]), proc,
          f"{lease} never held")


def wait_assembling(run: Path, proc: subprocess.Popen) -> None:
    """Return once ``proc`` records itself assembling the run in ``run``, failing if it
    ends first."""
    _wait((run / ASSEMBLING_FILE).exists, proc, f"{run / ASSEMBLING_FILE} never written")


@contextlib.contextmanager
def ended(proc: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """``proc``, killed (if it still runs) and waited for however the block ends."""
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


@dataclass
class Stopped:
    """What ``dbparallel stop`` said and did (``code``, its ``out`` lines), and what the
    process it stopped wrote (``stdout``, ``err``)."""

    code: int
    out: list[str]
    stdout: str
    err: str


def stop(run: Path, proc: subprocess.Popen, capsys) -> Stopped:
    """``dbparallel stop RUN --wait HANG_S`` of the run in ``run``, then ``proc``'s end."""
    code = cli.main(["stop", str(run), "--wait", str(HANG_S)])
    out = capsys.readouterr().out.splitlines()
    stdout, err = proc.communicate(timeout=HANG_S)
    return Stopped(code, out, stdout or "", err or "")


def write_assembly(storage: Storage, host: str, pid: int | str, start: str = "",
                   renewed_ago_s: float = 0.0, timeout_s: float = 60.0,
                   path: str = ASSEMBLING_FILE, session: str = "0123abcd",
                   **fields: object) -> None:
    """An assembling.json (or another record at ``path``) naming pid ``pid`` of ``host`` (of
    this process space), which started at ``start`` (process_start) where given, renewed
    ``renewed_ago_s`` ago with its writer's train.lease_timeout_s ``timeout_s``, for
    ``session`` (a Ray run's driver: a ``driver_session`` naming that process), with the
    record's other ``fields`` (a running/ record's ``blocks``)."""
    holder = f"{session}/{host}/{pid}/0123abcd/{process_space()}" + (f"/{start}" * bool(start))
    renewed = time.time() - renewed_ago_s
    storage.write_json(path, {"holder": holder, "since": renewed, "renewed": renewed,
                              "timeout_s": timeout_s, **fields})


def write_runner(storage: Storage, host: str, pid: int | str, name: str = "a", **more) -> None:
    """A record of a --local process running the run (``running/NAME.json``), as
    ``write_assembly`` writes one."""
    write_assembly(storage, host, pid, path=f"{RUNNING_DIR}/{name}.json", **more)


def tiny_run_dir(tmp_path: Path) -> Storage:
    """A run directory of the tiny recipe at ``tmp_path/run``, its config written and nothing
    trained."""
    storage = Storage(str(tmp_path / "run"))
    storage.makedirs()
    cfg = load_config([ROOT / "jobs" / "tiny_cpu.yaml"], [f"run.dir={storage.uri()}"])
    storage.write_text("config.yaml", dump_yaml(cfg))
    return storage


class Interleaved(Storage):
    """A Storage that runs ``then`` once, just before its ``at``-th read (0: the first), with
    a plain Storage of the same root: a process writing the run directory between two of a
    reader's requests, at each point in turn where a test tries every ``at``. ``reads``
    counts them."""

    def __init__(self, root: str, at: int, then: Callable[[Storage], None]):
        super().__init__(root)
        self.at, self.then, self.reads = at, then, 0

    def _read(self) -> None:
        if self.reads == self.at:
            self.then(Storage(self.root))
        self.reads += 1

    def exists(self, rel: str) -> bool:
        self._read()
        return super().exists(rel)

    def modified(self, rel: str) -> float | None:
        self._read()
        return super().modified(rel)

    def read_bytes(self, rel: str) -> bytes:
        self._read()
        return super().read_bytes(rel)

    def listdir(self, rel: str) -> list[str]:
        self._read()
        return super().listdir(rel)
