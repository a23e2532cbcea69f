"""The ``running/`` records of the processes that run a run (training/running.py): two runs
started at once in one run directory, on a local disk or in a bucket, leave exactly one
going on; a record whose removal failed, of a process that ran its run and lives on, refuses
nothing once its renewals stopped; a run stopped before it wrote anything leaves no directory
in a bucket either. The processes are real, paused at chosen points by files (as
holders.PAUSED is); the bucket is a real S3-compatible server (moto)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from holders import HANG_S, ROOT, ended, paused, stop, wait_paused, write_runner

import dbparallel
from dbparallel import cli
from dbparallel.config import load_config
from dbparallel.errors import RunDirError
from dbparallel.training.holder import process_start
from dbparallel.training.run_dir import open_run
from dbparallel.training.running import RUNNING_DIR, running
from dbparallel.training.storage import Storage

TINY = str(ROOT / "jobs" / "tiny_cpu.yaml")
HOST = socket.gethostname()
FAST = ["metrics.port=0", "train.steps=2", "train.warmup_steps=0"]

# `dbparallel train ARGS`, held twice by files beside MARK: past its checks, before it records
# itself (MARK.start, until MARK.go-start is written), and once it has read the records to
# refuse a run of its blocks, before it says what it found (MARK.decide, until
# MARK.go-decide). Two of them released at once record themselves at the same instant; the
# second hold keeps either from reading the records after the other ended.
RACER = """
import sys, time
from pathlib import Path

import dbparallel.training.running as running
from dbparallel import cli

mark, args, recorded = Path(sys.argv[1]), sys.argv[2:], []

def held(name):
    Path(f"{mark}.{name}").write_text("")
    while not Path(f"{mark}.go-{name}").exists():
        time.sleep(0.01)

remove_gone, refuse_running = running._remove_gone, running.refuse_running

def start(storage):
    held("start")
    recorded.append(True)
    remove_gone(storage)

def decide(*args):
    try:
        refuse_running(*args)
    finally:
        if recorded:
            held("decide")

running._remove_gone, running.refuse_running = start, decide
sys.exit(cli.main(["train", *args]))
"""

# A process that runs a run (recorded by running(), as dbparallel.train records it) of the
# recipe ARGV[1] in the run directory ARGV[2] with train.lease_timeout_s=1, holds at its end
# (MARK.ran, until MARK.go), then lives on (MARK.done), as a program that called
# dbparallel.train does.
LINGERING = """
import sys, time
from pathlib import Path

from dbparallel.config import load_config
from dbparallel.training.running import running

recipe, run_dir, mark = sys.argv[1], sys.argv[2], Path(sys.argv[3])
with running(load_config([recipe], [f"run.dir={run_dir}", "train.lease_timeout_s=1"])):
    Path(f"{mark}.ran").write_text("")
    while not Path(f"{mark}.go").exists():
        time.sleep(0.01)
Path(f"{mark}.done").write_text("")
time.sleep(600)
"""


def _child(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _until(done: Callable[[], bool], what: str) -> None:
    """Return once ``done()`` (a hang guard of HANG_S, never a timing claim)."""
    deadline = time.monotonic() + HANG_S
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(what)
        time.sleep(0.02)


def _marked(mark: Path, name: str) -> Path:
    return Path(f"{mark}.{name}")


@pytest.mark.parametrize("where", ["local", pytest.param("s3", marks=pytest.mark.slow)])
def test_two_runs_started_at_once_leave_one_going_on(where: str, tmp_path: Path,
                                                     request) -> None:
    # in a bucket, a key of its own: moto's objects outlive its server
    run = (str(tmp_path / "run") if where == "local"
           else request.getfixturevalue("bucket")(tmp_path.name))
    storage = Storage(run)
    marks = [tmp_path / "first", tmp_path / "second"]
    procs = [_child(RACER, str(m), TINY, "--local", f"run.dir={run}", *FAST) for m in marks]
    with ended(procs[0]), ended(procs[1]):
        for mark, proc in zip(marks, procs, strict=True):
            _until(lambda m=mark, p=proc: _marked(m, "start").exists() or p.poll() is not None,
                   f"{mark} never held")
            assert proc.poll() is None, proc.communicate()
        for mark in marks:  # both past their checks, neither recorded: released at once
            _marked(mark, "go-start").write_text("")
        for mark, proc in zip(marks, procs, strict=True):
            _until(lambda m=mark, p=proc: _marked(m, "decide").exists() or p.poll() is not None,
                   f"{mark} neither refused nor reading the records")
        for mark in marks:
            _marked(mark, "go-decide").write_text("")
        # one goes on past its refusal (it writes config.yaml, then trains), the other ended
        _until(lambda: all(p.poll() is not None for p in procs) or (
            storage.exists("config.yaml") and any(p.poll() is not None for p in procs)),
            "neither ended")
        codes = [proc.poll() for proc in procs]
        assert sorted(codes, key=str) == [2, None] or sorted(codes) == [0, 2], \
            (codes, [proc.communicate() for proc in procs if proc.poll() is not None])
        refused, went_on = codes.index(2), 1 - codes.index(2)
        said = procs[refused].communicate()[1].strip().splitlines()[-1]
        left = storage.listdir(RUNNING_DIR)
        record = storage.read_json(f"{RUNNING_DIR}/{left[0]}") if left else {}
    assert said.startswith(
        f"dbparallel: error: {storage.uri()}: another process runs this run (pid "
        f"{procs[went_on].pid} on {HOST}, training every block; its record renewed "), said
    assert "which still runs on this machine: stop it first" in said, said
    # the refused one withdrew its record; the other's is confirmed (gone if it finished)
    assert (len(left), record.get("confirmed")) in [(0, None), (1, True)]
    assert record.get("holder", f"/{HOST}/{procs[went_on].pid}/").split("/")[1:3] == \
        [HOST, str(procs[went_on].pid)]


def _live() -> contextlib.AbstractContextManager[subprocess.Popen]:
    """A live process of this machine, for the records a test writes in its name."""
    return ended(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]))


def _rival(storage: Storage, proc: subprocess.Popen, since: float, confirmed: bool,
           name: str = "rival") -> None:
    """A record of the live process ``proc`` running every block, begun at ``since``,
    that has (``confirmed``) or has not yet settled that it goes on."""
    write_runner(storage, HOST, proc.pid, name=name, start=process_start(proc.pid),
                 since=since, confirmed=confirmed)


def _when_recorded(storage: Storage, then: Callable[[], None]) -> threading.Thread:
    """A thread that calls ``then`` once a second record is in ``storage``'s running/ (this
    process's, beside the rival's)."""
    def watch() -> None:
        _until(lambda: len(storage.listdir(RUNNING_DIR)) >= 2, "never recorded")
        then()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.fixture(params=["local", "s3"])
def run_dir(request, tmp_path: Path) -> str:
    """A run directory not made yet: on the local disk, or in a bucket (a key of its own:
    moto's objects outlive its server)."""
    if request.param == "local":
        return str(tmp_path / "run")
    return request.getfixturevalue("bucket")(tmp_path.name)


def test_a_start_that_sees_an_earlier_one_starting_withdraws_and_refuses(run_dir: str) -> None:
    cfg = load_config([TINY], [f"run.dir={run_dir}"])
    storage = Storage(cfg.run_dir)
    with _live() as proc:
        _rival(storage, proc, time.time() - 1, confirmed=False)
        with pytest.raises(RunDirError) as refused, running(cfg):
            pytest.fail("went on beside an earlier start")
        assert storage.listdir(RUNNING_DIR) == ["rival.json"]  # its own record withdrawn
    assert str(refused.value).startswith(
        f"{storage.uri()}: another process runs this run (pid {proc.pid} on {HOST}, training "
        f"every block; its record renewed ")


def test_the_earlier_start_goes_on_once_the_later_one_withdraws(run_dir: str) -> None:
    cfg = load_config([TINY], [f"run.dir={run_dir}"])
    storage = Storage(cfg.run_dir)
    rival = f"{RUNNING_DIR}/rival.json"
    with _live() as proc:
        _rival(storage, proc, time.time() + 60, confirmed=False)
        withdrawn = _when_recorded(storage, lambda: storage.delete(rival))
        with running(cfg):
            ours = [storage.read_json(f"{RUNNING_DIR}/{n}") for n in storage.listdir(RUNNING_DIR)]
            _rival(storage, proc, time.time() + 60, confirmed=False)  # another later start:
            open_run(cfg)  # it refuses nothing here (it withdraws once it sees this record)
        withdrawn.join()
    assert [r["confirmed"] for r in ours] == [True]


def test_the_earlier_start_is_refused_where_the_later_one_went_on_without_seeing_it(
        run_dir: str) -> None:
    """The later start read the records before this one's was written, and confirmed its
    own: this one, which found it unconfirmed, waits until it has, and is refused then, its
    record withdrawn: a process that goes on holds a confirmed record, so no start is left
    waiting on it, whatever its clock says of ``since``."""
    cfg = load_config([TINY], [f"run.dir={run_dir}"])
    storage = Storage(cfg.run_dir)
    with _live() as proc:
        later = time.time() + 60
        _rival(storage, proc, later, confirmed=False)
        settled = _when_recorded(storage, lambda: _rival(storage, proc, later, confirmed=True))
        with pytest.raises(RunDirError, match=re.escape(f"(pid {proc.pid} on {HOST}, ")), \
                running(cfg):
            pytest.fail("went on beside a start that confirmed its record")
        settled.join()
        assert storage.listdir(RUNNING_DIR) == ["rival.json"]


def test_a_start_beside_a_confirmed_record_is_refused_at_once(run_dir: str) -> None:
    """A confirmed record begun after this start's own (another machine's clock behind this
    one's) refuses it at once, as one begun before does."""
    cfg = load_config([TINY], [f"run.dir={run_dir}"])
    storage = Storage(cfg.run_dir)
    with _live() as proc:
        _rival(storage, proc, time.time() + 3600, confirmed=True)
        with pytest.raises(RunDirError, match="which still runs on this machine"), running(cfg):
            pytest.fail("went on beside a confirmed record")
        assert storage.listdir(RUNNING_DIR) == ["rival.json"]


def test_a_confirmed_record_refuses_a_start_also_beside_a_later_unsettled_one(
        tmp_path: Path) -> None:
    """A start that finds a confirmed record (a run that goes on, here on another machine)
    beside an unconfirmed one begun after its own (a start whose process hangs, or was killed
    as it settled) is refused by the confirmed one, naming the run that goes on, without
    waiting on the other for its train.lease_timeout_s."""
    cfg = load_config([TINY], [f"run.dir={tmp_path / 'run'}", "train.lease_timeout_s=2"])
    storage = Storage(cfg.run_dir)
    with _live() as proc:
        write_runner(storage, "other-host", 4343, name="going", since=time.time() - 60)
        _rival(storage, proc, time.time() + 60, confirmed=False, name="hung")
        with pytest.raises(RunDirError) as refused, running(cfg):
            pytest.fail("went on beside a confirmed record")
        assert sorted(storage.listdir(RUNNING_DIR)) == ["going.json", "hung.json"]
    assert "(pid 4343 on other-host, training every block; " in str(refused.value), \
        str(refused.value)


def test_a_record_deleted_under_its_running_process_is_written_back(run_dir: str) -> None:
    """As an object store's empty directory cleared at the instant a record was written
    deletes it (storage.py ``remove_empty_dir``): the process still runs the run, so its
    next renewal writes the record back, and its end removes it."""
    cfg = load_config([TINY], [f"run.dir={run_dir}", "train.lease_timeout_s=0.3"])
    storage = Storage(cfg.run_dir)
    with running(cfg):
        [name] = storage.listdir(RUNNING_DIR)
        first = storage.read_json(f"{RUNNING_DIR}/{name}")
        storage.delete(f"{RUNNING_DIR}/{name}")
        _until(lambda: storage.exists(f"{RUNNING_DIR}/{name}"), "never written back")
        back = storage.read_json(f"{RUNNING_DIR}/{name}")
    assert (back["holder"], back["since"], back["confirmed"]) == \
        (first["holder"], first["since"], True)
    assert not storage.exists("")  # removed at its end, with the directory made for it


@contextlib.contextmanager
def _read_only(folder: Path) -> Iterator[None]:
    """``folder`` made read-only for as long as the block runs: immutable (chattr +i) where
    this process is root, whom a folder's mode does not stop; else its mode."""
    if os.geteuid() == 0:
        made = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
        undo = ["chattr", "-i", str(folder)]
    else:
        folder.chmod(0o555)
        made, undo = True, ["chmod", "755", str(folder)]
    try:
        probe = folder / "probe"
        try:
            probe.write_text("")
        except OSError:
            pass
        else:
            probe.unlink()
            made = False
        if not made:
            pytest.skip(f"{folder} cannot be made read-only here")
        yield
    finally:
        subprocess.run(undo, capture_output=True)


def test_a_record_left_by_a_process_that_ran_its_run_and_lives_on_refuses_nothing(
        tmp_path: Path, capsys) -> None:
    """Its record's removal failed (the folder read-only at its end): the process still runs,
    but no longer renews the record, so once the record lapsed a new run goes on, and
    `dbparallel stop` signals nothing."""
    run, mark = tmp_path / "run", tmp_path / "lingering"
    proc = _child(LINGERING, TINY, str(run), str(mark))
    with ended(proc):
        _until(lambda: _marked(mark, "ran").exists() or proc.poll() is not None, "never ran")
        with _read_only(run / RUNNING_DIR):
            _marked(mark, "go").write_text("")
            _until(lambda: _marked(mark, "done").exists() or proc.poll() is not None,
                   "never done")
        assert proc.poll() is None, proc.communicate()  # it lives on, its record left
        [left] = (run / RUNNING_DIR).iterdir()
        record = json.loads(left.read_text())
        _until(lambda: time.time() >= record["renewed"] + record["timeout_s"], "never lapsed")
        code = cli.main(["train", TINY, "--local", f"run.dir={run}", *FAST])
        refused = capsys.readouterr().err
        assert code == 0, refused
        stopped = cli.main(["stop", str(run)])
        told = capsys.readouterr().out
        assert proc.poll() is None  # not signalled
        runners = dbparallel.status(run).runners
    assert stopped == 0, told
    assert re.fullmatch(
        rf"the run: counted as stopped: its record lapsed \(renewed \d+ s ago by pid "
        rf"{proc.pid} on {re.escape(HOST)}, past its writer's train.lease_timeout_s=1 s\); "
        rf"nothing signalled\n", told), told
    assert runners == []
    assert [p.name for p in (run / RUNNING_DIR).iterdir()] == [left.name]


def test_a_run_stopped_while_it_checks_its_data_leaves_nothing_in_a_bucket(
        bucket, tmp_path: Path, capsys) -> None:
    run, mark = bucket(f"{tmp_path.name}-stopped"), tmp_path / "paused"
    storage = Storage(run)
    proc = paused("data check", mark, "command", TINY, "--local", f"run.dir={run}", *FAST)
    with ended(proc):
        wait_paused(mark, proc)
        assert storage.listdir(RUNNING_DIR)  # its record, in a directory made for it
        stopped = stop(run, proc, capsys)
    assert (stopped.code, proc.returncode) == (0, 143), stopped.err
    assert not storage.exists("")  # no record, no `running/` or directory marker
    cfg = load_config([TINY], [f"run.dir={bucket(f'{tmp_path.name}-refused')}"])
    with pytest.raises(RunDirError, match="a bad row"), running(cfg):
        raise RunDirError("a bad row")
    assert not Storage(cfg.run_dir).exists("")
