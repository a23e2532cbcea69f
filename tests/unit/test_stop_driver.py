"""A Ray run's driver recorded in ``running/`` (training/running.py) for its whole run, as
``status`` and ``stop`` see it: found while no block's lease names it (its data check on the
cluster, its wait for placement, its actors' start), signalled once where leases also name it
as their driver. The driver here is a plain process that the record names as Ray's
``driver_session`` does; tests/ray/test_stop_driver_ray.py stops a real one."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from holders import HANG_S, ROOT, tiny_run_dir, write_runner

import dbparallel
from dbparallel import cli
from dbparallel.cli_status import render
from dbparallel.config import load_config
from dbparallel.training.holder import driver_session, process_start
from dbparallel.training.process_record import record_driver
from dbparallel.training.running import RUNNING_DIR, running
from dbparallel.training.storage import Storage

TINY = str(ROOT / "jobs" / "tiny_cpu.yaml")
HOST = socket.gethostname()


def _driver() -> tuple[subprocess.Popen, str]:
    """A process standing for a Ray run's driver, and the run's session naming it (its
    process space and start) as ``driver_session`` names the process that calls it."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    session = driver_session().replace(f":{os.getpid()}~", f":{proc.pid}~")
    return proc, session.rpartition("~")[0] + f"~{process_start(proc.pid)}"


def _record(storage: Storage, proc: subprocess.Popen, session: str) -> None:
    """The driver's record in ``running/``, as ``running(cfg, session=session)`` writes it."""
    write_runner(storage, HOST, proc.pid, start=process_start(proc.pid), session=session)


def _lease(storage: Storage, block: int, session: str) -> None:
    """Block ``block``'s lease, held by a block process of the run ``session`` on a worker
    node."""
    storage.write_json(f"blocks/block_{block}/lease.json", {
        "generation": 1, "session": session, "renewed_at": time.time(), "timeout_s": 60.0,
        "holder": f"{session}/worker-node/{100 + block}/0123abcd/elsewhere/12345"})


def test_the_record_names_a_ray_run_s_driver_and_status_lists_it_as_one(tmp_path: Path,
                                                                        capsys) -> None:
    cfg = load_config([TINY], [f"run.dir={tmp_path / 'run'}"])
    storage = Storage(cfg.run_dir)
    with running(cfg, session=driver_session()):  # its data check: no config.yaml yet
        [name] = storage.listdir(RUNNING_DIR)
        record = json.loads((tmp_path / "run" / RUNNING_DIR / name).read_text())
        assert cli.main(["status", cfg.run_dir]) == 2
        refused = capsys.readouterr().err
    assert record_driver(record) and record["blocks"] is None
    assert record["holder"].split("/")[1:3] == [HOST, str(os.getpid())]
    assert refused == (
        f"dbparallel: error: {cfg.run_dir}: not a run directory yet (no config.yaml): a Ray run "
        f"is starting in it (the Ray run whose driver is pid {os.getpid()} on {HOST}), which "
        f"checks its data before it writes config.yaml; `dbparallel stop {cfg.run_dir}` "
        f"stops it\n")
    assert not (tmp_path / "run").exists()  # made for the record alone: removed with it
    storage = tiny_run_dir(tmp_path)
    with running(cfg, session=driver_session()):  # waiting for placement, say
        shown = dbparallel.status(storage.uri())
    with running(cfg):  # a --local process's record is no driver's
        local = dbparallel.status(storage.uri())
    me = f"{HOST}/{os.getpid()}"
    assert (shown.state, shown.drivers, shown.runners) == ("2 not started", [me], [])
    assert f"running: {me} (the Ray run's driver: no block process of it writes now; it checks " \
        f"the data on the cluster, waits for the cluster to place the blocks, or starts their " \
        f"processes; `dbparallel stop` stops it)" in render(shown).splitlines()
    assert (local.drivers, local.runners) == ([], [me])
    assert dbparallel.status(storage.uri()).drivers == []  # removed with its run


def test_a_driver_that_no_lease_names_is_stopped_from_its_record(tmp_path: Path,
                                                                 capsys) -> None:
    starting = Storage(str(tmp_path / "new"))  # checking the data: no config.yaml yet
    storage = tiny_run_dir(tmp_path)  # waiting for placement, or starting its actors
    outs = []
    for where in (starting, storage):
        proc, session = _driver()
        try:
            _record(where, proc, session)
            code = cli.main(["stop", where.uri(), "--wait", str(HANG_S)])
            ended = proc.wait(timeout=HANG_S)
        finally:
            proc.kill()
            proc.wait()
        outs.append((code, ended, capsys.readouterr().out.splitlines(), proc.pid))
    for code, ended, out, pid in outs:
        assert (code, ended) == (0, -signal.SIGTERM), out  # its own default: it ends
        assert out == [f"the run: the Ray run whose driver is pid {pid} on {HOST} runs it: "
                       f"SIGTERM sent to the driver",
                       f"waiting for pid {pid} to stop (up to {HANG_S} s) ...",
                       "the run: stopped", "the same train command resumes the run"]


def test_a_driver_named_by_leases_and_its_record_is_signalled_once_and_listed_once(
        tmp_path: Path, capsys) -> None:
    storage = tiny_run_dir(tmp_path)
    proc, session = _driver()
    try:
        _record(storage, proc, session)
        for block in (0, 1):  # its actors started on a worker node: each holds its lease
            _lease(storage, block, session)
        shown = dbparallel.status(storage.uri())
        assert cli.main(["stop", storage.uri(), "--wait", "0"]) == 0
        assert proc.wait(timeout=HANG_S) == -signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()
    assert [(b.state, b.driver) for b in shown.blocks] == [("training", f"{HOST}/{proc.pid}")] * 2
    assert (shown.drivers, shown.runners) == ([], [])  # the rows name it already
    assert capsys.readouterr().out.splitlines() == [
        f"blocks 0, 1: the Ray run whose driver is pid {proc.pid} on {HOST} trains them: "
        f"SIGTERM sent to the driver", "the same train command resumes the run"]


def test_a_driver_of_another_machine_is_named_with_where_to_stop_it(tmp_path: Path,
                                                                    capsys) -> None:
    storage = tiny_run_dir(tmp_path)
    session = "0123abcd@head-node:4000"  # a driver_session of another machine
    write_runner(storage, "head-node", 4000, session=session)
    assert cli.main(["stop", storage.uri()]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"the run: run by the Ray run whose driver is pid 4000 on head-node, of another "
        f"machine or container, which cannot be signalled from here: run `dbparallel stop "
        f"{storage.uri()}` on head-node (or `kill 4000` there), or `ray job stop` for a "
        f"submitted job"]
    assert dbparallel.status(storage.uri()).drivers == ["head-node/4000"]
