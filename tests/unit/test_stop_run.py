"""``dbparallel stop RUN_DIR``: SIGTERM to the process that holds each block's lease (a
``--local`` process, or a Ray run's driver), once each, never to another process, and the
blocks it cannot stop from here named with where to stop them."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from holders import HANG_S, ended, stop, wait_training

import dbparallel
from dbparallel import cli
from dbparallel.config import dump_yaml, load_config
from dbparallel.training.holder import driver_session, process_space, process_start
from dbparallel.training.lease import BlockLease
from dbparallel.training.storage import Storage

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "jobs" / "tiny_cpu.yaml")
HOST = socket.gethostname()


def test_a_local_block_process_stops_releasing_its_lease(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dbparallel", "train", TINY, "--local", "--block", "1",
         f"run.dir={run}", "metrics.port=0", "train.steps=100000", "train.checkpoint_every=2"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lease = run / "blocks" / "block_1" / "lease.json"
    with ended(proc):
        wait_training(lease.parent, proc)
        stopped = stop(run, proc, capsys)
    code, out, err = stopped.code, stopped.out, stopped.err
    assert code == 0, (out, err)
    assert out[0] == f"block 1: pid {proc.pid} on {HOST} trains it: SIGTERM sent"
    assert out[-2:] == ["block 1: stopped, its lease released",
                        "the same train command resumes the run"]
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == \
        "dbparallel: stopped (SIGTERM) (run the same command again to resume)"
    assert json.loads(lease.read_text())["holder"] == ""
    block = dbparallel.status(run).blocks[1]
    assert (block.state, block.writer) == ("stopped", "")
    assert cli.main(["stop", str(run)]) == 0  # stopped already: nothing held
    assert capsys.readouterr().out == f"{run}: no block's write lease is held: nothing to stop\n"


def _run_dir(tmp_path: Path) -> Storage:
    """A run directory of the tiny recipe, its config written and nothing trained."""
    run = tmp_path / "run"
    cfg = load_config([TINY], [f"run.dir={run}"])
    storage = Storage(str(run))
    storage.makedirs()
    storage.write_text("config.yaml", dump_yaml(cfg))
    return storage


def test_a_run_with_nothing_held_is_told_so(tmp_path: Path, capsys) -> None:
    storage = _run_dir(tmp_path)
    assert cli.main(["stop", storage.uri()]) == 0  # never started
    lease = BlockLease(storage, 0, "a-run", 120.0)
    lease.acquire()
    lease.release()  # a writer that stopped cleanly
    assert cli.main(["stop", storage.uri(), "--wait", "0"]) == 0
    assert capsys.readouterr().out == \
        f"{storage.uri()}: no block's write lease is held: nothing to stop\n" * 2


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])


def _actors(run: str, session: str) -> list[subprocess.Popen]:
    """Block processes of a Ray run: each takes its block's lease for ``session``, then
    waits; returned once both hold theirs."""
    procs = [subprocess.Popen(
        [sys.executable, "-c",
         "import time; from dbparallel.training.lease import BlockLease; "
         "from dbparallel.training.storage import Storage; "
         f"BlockLease(Storage({run!r}), {block}, {session!r}, 3600.0).acquire(); "
         "print('held', flush=True); time.sleep(600)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True) for block in (0, 1)]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    except BaseException:
        for proc in procs:
            proc.kill()
            proc.wait()
        raise
    return procs


def test_a_ray_run_s_driver_is_sent_sigterm_once_and_its_block_processes_none(
        tmp_path: Path, capsys) -> None:
    storage = _run_dir(tmp_path)
    driver = _sleeper()
    session = f"0123abcd@{HOST}:{driver.pid}"
    actors = _actors(storage.uri(), session)
    try:
        assert cli.main(["stop", storage.uri(), "--wait", str(HANG_S)]) == 0
        assert driver.wait(timeout=HANG_S) == -signal.SIGTERM  # its own default: it ends
        assert [a.poll() for a in actors] == [None, None]  # Ray's to stop, not signalled
    finally:
        for proc in (driver, *actors):
            proc.kill()
            proc.wait()
    assert capsys.readouterr().out.splitlines() == [
        f"blocks 0, 1: the Ray run whose driver is pid {driver.pid} on {HOST} trains them: "
        f"SIGTERM sent to the driver",
        f"waiting for pid {driver.pid} to stop (up to {HANG_S} s) ...",
        *(f"block {b}: stopped; its process ended without releasing its lease (a rerun on "
          f"this machine takes it over at once)" for b in (0, 1)),
        "the same train command resumes the run"]


def test_a_ray_job_s_driver_is_stopped_and_its_job_to_be_resubmitted(
        tmp_path: Path, capsys) -> None:
    storage = _run_dir(tmp_path)
    script = tmp_path / "dbparallel"  # as the installed script, run by its shebang's python
    script.write_text("import time; time.sleep(600)")
    env = {**os.environ, "RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps(  # as Ray's job manager
        {"runtime_env": {}, "metadata": {"job_submission_id": "raysubmit_a1"}})}
    driver = subprocess.Popen([sys.executable, str(script), "train", "jobs/tiny_cpu.yaml",
                               "run.dir=s3://b/my run"], env=env)
    actors = _actors(storage.uri(), f"0123abcd@{HOST}:{driver.pid}")
    try:
        assert cli.main(["stop", storage.uri(), "--wait", "0"]) == 0
        assert driver.wait(timeout=HANG_S) == -signal.SIGTERM
    finally:
        for proc in (driver, *actors):
            proc.kill()
            proc.wait()
    assert capsys.readouterr().out.splitlines() == [
        f"blocks 0, 1: the Ray run whose driver is pid {driver.pid} on {HOST} trains them: "
        f"SIGTERM sent to the driver",
        "resubmit the same job to resume: `ray job submit ... -- dbparallel train "
        "jobs/tiny_cpu.yaml 'run.dir=s3://b/my run'`"]


def _lease(storage: Storage, block: int, host: str, pid: int | str, renewed_at: float,
           session: str = "0123abcd", start: str | None = None, **more: float) -> None:
    """A lease of ``block`` held by ``pid`` on ``host``; ``start``: the process start it
    records (None: none, as leases written before starts were recorded)."""
    storage.write_json(f"blocks/block_{block}/lease.json", {
        "generation": 1, "session": session, "renewed_at": renewed_at, **more,
        "holder": f"{session}/{host}/{pid}/0123abcd/{process_space()}"
                  + ("" if start is None else f"/{start}")})


def test_a_holder_is_told_from_a_process_that_took_its_pid_over_by_its_start(
        tmp_path: Path, capsys) -> None:
    """The start a lease records, not the clock: the process of the pid that started then is
    signalled; one that started at another time is not the holder."""
    storage = _run_dir(tmp_path)
    holder, other = _sleeper(), _sleeper()
    try:
        started = process_start(holder.pid)
        assert started and process_start(other.pid)
        _lease(storage, 0, HOST, holder.pid, renewed_at=time.time() - 600, start=started)
        _lease(storage, 1, HOST, other.pid, renewed_at=time.time() + 600,
               start=str(int(process_start(other.pid)) + 1))
        assert cli.main(["stop", storage.uri(), "--wait", str(HANG_S)]) == 0
        assert holder.wait(timeout=HANG_S) == -signal.SIGTERM
        assert other.poll() is None
    finally:
        for proc in (holder, other):
            proc.kill()
            proc.wait()
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"block 0: pid {holder.pid} on {HOST} trains it: SIGTERM sent"
    assert out[1].startswith(f"block 1: already stopped: pid {other.pid} on {HOST}, which "
                             f"held its lease, no longer runs it")


def test_a_ray_run_s_driver_here_is_stopped_for_blocks_that_train_on_other_nodes(
        tmp_path: Path, capsys) -> None:
    """The usual cluster: the driver on this (head) node, the block processes on workers.
    The session names the driver's process space and start, so it is asked here."""
    storage = _run_dir(tmp_path)
    driver = _sleeper()
    session = driver_session().replace(f":{os.getpid()}~", f":{driver.pid}~")
    session = session.rpartition("~")[0] + f"~{process_start(driver.pid)}"
    try:
        for block in (0, 1):
            _lease(storage, block, "worker-node", 100 + block, renewed_at=time.time(),
                   session=session, start="12345")
        assert cli.main(["stop", storage.uri(), "--wait", "0"]) == 0
        assert driver.wait(timeout=HANG_S) == -signal.SIGTERM
    finally:
        driver.kill()
        driver.wait()
    assert capsys.readouterr().out.splitlines() == [
        f"blocks 0, 1: the Ray run whose driver is pid {driver.pid} on {HOST} trains them: "
        f"SIGTERM sent to the driver", "the same train command resumes the run"]


def test_a_pid_taken_over_since_the_lease_was_renewed_is_not_signalled(tmp_path: Path,
                                                                       capsys) -> None:
    storage = _run_dir(tmp_path)
    other = _sleeper()  # a process that took the holder's pid over after its last renewal
    try:
        _lease(storage, 0, HOST, other.pid, renewed_at=time.time() - 60)
        _lease(storage, 1, HOST, os.getpid(), renewed_at=time.time())  # this process
        assert cli.main(["stop", storage.uri()]) == 0
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
    out = capsys.readouterr().out.splitlines()
    assert out == [f"block {b}: already stopped: pid {pid} on {HOST}, which held its lease, "
                   f"no longer runs it (a rerun takes the lease over at once); nothing "
                   f"signalled" for b, pid in ((0, other.pid), (1, os.getpid()))]


def test_a_ray_block_process_whose_driver_is_gone_is_left_to_end(tmp_path: Path,
                                                                   capsys) -> None:
    """Ray ends the processes of a driver that is gone: nothing is signalled, the block's
    process is waited for, and a block whose processes are both gone is stopped already."""
    storage = _run_dir(tmp_path)
    gone, ended = (subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                                  capture_output=True, text=True, check=True).stdout.strip()
                   for _ in range(2))
    session = f"0123abcd@{HOST}:{gone}"
    actor = _sleeper()
    try:
        _lease(storage, 0, HOST, actor.pid, renewed_at=time.time(), session=session,
               start=process_start(actor.pid))  # as a lease records it: no clock involved
        _lease(storage, 1, HOST, ended, renewed_at=time.time(), session=session)
        assert cli.main(["stop", storage.uri(), "--wait", "0"]) == 0
        assert actor.poll() is None
    finally:
        actor.kill()
        actor.wait()
    assert capsys.readouterr().out.splitlines() == [
        f"block 0: its Ray run's driver (pid {gone} on {HOST}) is gone; its block process, "
        f"pid {actor.pid}, ends by itself",
        f"block 1: already stopped: its Ray run's driver (pid {gone} on {HOST}) and block "
        f"process (pid {ended}) no longer run it (a rerun takes the lease over at once); "
        f"nothing signalled"]


def test_a_holder_elsewhere_is_named_with_where_to_stop_it(tmp_path: Path, capsys) -> None:
    storage = _run_dir(tmp_path)
    run = storage.uri()
    _lease(storage, 0, "other-host", 4242, renewed_at=time.time())
    _lease(storage, 1, "head-node", 77, renewed_at=time.time(),
           session="0123abcd@head-node:4000")  # a block process of a Ray run's driver
    assert cli.main(["stop", run]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"block 0: held by pid 4242 on other-host, of another machine or container, which "
        f"cannot be signalled from here: run `dbparallel stop {run}` on other-host (or "
        f"`kill 4242` there)",
        "block 1: held by the Ray run whose driver is pid 4000 on head-node, of another "
        f"machine or container, which cannot be signalled from here: run `dbparallel stop "
        f"{run}` on head-node (or `kill 4000` there), or `ray job stop` for a submitted job"]
    _lease(storage, 0, "other-host", 4242, renewed_at=time.time() - 700,
           timeout_s=600.0)  # lapsed by its writer's own timeout, not config.yaml's 120 s
    _lease(storage, 1, HOST, 999_999_999, renewed_at=time.time())  # no such process
    assert cli.main(["stop", run]) == 0
    out = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"block 0: counted as stopped: its lease lapsed \(renewed 7\d\d s ago "
                        r"by pid 4242 on other-host, past its writer's "
                        r"train.lease_timeout_s=600 s\); nothing signalled", out[0]), out[0]
    assert out[1].startswith(f"block 1: already stopped: pid 999999999 on {HOST}")


def test_bad_input_is_refused_as_status_refuses_it(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as missing:
        cli.main(["stop"])
    assert missing.value.code == 2
    for command in ("status", "stop"):
        assert cli.main([command, str(tmp_path)]) == 2
        assert cli.main([command, str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-4:] == [f"dbparallel: error: {tmp_path}: not a run directory (no config.yaml)",
                        f"dbparallel: error: {tmp_path / 'nowhere'}: no such directory"] * 2
    storage = _run_dir(tmp_path)
    assert cli.main(["stop", storage.uri(), "--wait", "-1"]) == 2
    assert capsys.readouterr().err == "dbparallel: error: --wait -1: seconds to wait, 0 or more\n"
