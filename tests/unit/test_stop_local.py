"""``dbparallel stop`` on a ``--local`` run while it holds neither a block's lease nor the
assembly's record: while it checks the data (before it writes config.yaml), and between two
blocks. The process records itself in ``running/`` for its whole run (training/running.py)
and is stopped from there as a lease's holder is; ``status`` names it, and never reads it as
an assembly."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
from holders import (
    HANG_S,
    ROOT,
    ended,
    paused,
    stop,
    tiny_run_dir,
    wait_paused,
    write_runner,
)

import dbparallel
from dbparallel import cli
from dbparallel.config import load_config
from dbparallel.errors import RunDirError
from dbparallel.training.running import RUNNING_DIR, running, stopped_by
from dbparallel.training.storage import Storage

TINY = str(ROOT / "jobs" / "tiny_cpu.yaml")
HOST = socket.gethostname()
FAST = ["metrics.port=0", "train.steps=2", "train.warmup_steps=0"]
STOPPED = "dbparallel: stopped (SIGTERM) (run the same command again to resume)"


def _said(pid: int) -> list[str]:
    """What ``stop`` says of the --local process ``pid`` that it finds by its record alone."""
    return [f"the run: pid {pid} on {HOST} runs it: SIGTERM sent",
            f"waiting for pid {pid} to stop (up to {HANG_S} s) ...",
            "the run: stopped", "the same train command resumes the run"]


@pytest.mark.parametrize("how", ["command", "python"])
def test_a_local_run_checking_its_data_is_stopped(tmp_path: Path, capsys, how: str) -> None:
    run, mark = tmp_path / "run", tmp_path / "paused"
    args = ([TINY, "--local", f"run.dir={run}", *FAST] if how == "command"
            else [TINY, str(run)])
    proc = paused("data check", mark, how, *args)
    with ended(proc):
        wait_paused(mark, proc)
        assert not (run / "config.yaml").exists()  # not yet a run directory
        assert cli.main(["status", str(run)]) == 2
        refused = capsys.readouterr().err
        stopped = stop(run, proc, capsys)
    assert refused == (
        f"dbparallel: error: {run}: not a run directory yet (no config.yaml): a --local run is "
        f"starting in it (pid {proc.pid} on {HOST}), which checks its data before it writes "
        f"config.yaml; `dbparallel stop {run}` stops it\n")
    assert stopped.code == 0, (stopped.out, stopped.err)
    assert stopped.out == _said(proc.pid)
    if how == "command":
        assert proc.returncode == 143, stopped.err
        assert stopped.err.strip().splitlines()[-1] == STOPPED
    else:
        assert proc.returncode == 0, stopped.err
        assert json.loads(stopped.stdout.splitlines()[-1]).startswith(
            "Terminated: stopped by SIGTERM")
    assert not run.exists()  # it wrote nothing but its record: nothing a rerun would refuse


def test_a_local_run_between_two_blocks_is_stopped_and_named_by_status(
        tmp_path: Path, capsys) -> None:
    run, mark = tmp_path / "run", tmp_path / "paused"
    proc = paused("block 1", mark, "command", TINY, "--local", f"run.dir={run}", *FAST)
    with ended(proc):
        wait_paused(mark, proc)
        lease = json.loads((run / "blocks" / "block_0" / "lease.json").read_text())
        taken = (run / "blocks" / "block_1" / "lease.json").exists()
        shown = dbparallel.status(run)
        assert cli.main(["status", str(run)]) == 0
        lines = capsys.readouterr().out.splitlines()
        stopped = stop(run, proc, capsys)
    assert (lease["holder"], taken) == ("", False)  # no block's lease held
    assert (shown.state, shown.runners, shown.assembler) == \
        ("1 not started, 1 done", [f"{HOST}/{proc.pid}"], "")
    assert f"running: {HOST}/{proc.pid} (a --local process between blocks, or still checking " \
        f"the data: it holds no block's lease now; `dbparallel stop` stops it)" in lines
    assert stopped.code == 0, (stopped.out, stopped.err)
    assert stopped.out == _said(proc.pid)
    assert proc.returncode == 143, stopped.err
    assert stopped.err.strip().splitlines()[-1] == STOPPED
    after = dbparallel.status(run)
    assert (after.state, after.runners) == ("1 not started, 1 done", [])
    assert not (run / RUNNING_DIR).exists()  # its record removed, and the folder it made


def test_a_run_starting_elsewhere_is_named_and_a_gone_one_is_nothing(tmp_path: Path,
                                                                     capsys) -> None:
    starting = Storage(str(tmp_path / "new"))  # no config.yaml yet: checking its data
    write_runner(starting, "other-host", 4242)
    assert cli.main(["status", starting.uri()]) == 2  # told where stop can signal it
    assert capsys.readouterr().err == (
        f"dbparallel: error: {starting.uri()}: not a run directory yet (no config.yaml): a "
        f"--local run is starting in it (pid 4242 on other-host), which checks its data before "
        f"it writes config.yaml; it runs on other-host, another machine or container: "
        f"`dbparallel stop {starting.uri()}` run there stops it\n")
    assert cli.main(["stop", starting.uri()]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"the run: run by pid 4242 on other-host, of another machine or container, which "
        f"cannot be signalled from here: run `dbparallel stop {starting.uri()}` on other-host "
        f"(or `kill 4242` there)"]
    write_runner(starting, HOST, 999_999_999, name="b")  # killed before it made the run
    assert cli.main(["stop", starting.uri()]) == 1  # (the other one still counts)
    capsys.readouterr()
    (tmp_path / "new" / RUNNING_DIR / "a.json").unlink()
    assert cli.main(["stop", starting.uri()]) == 2
    assert capsys.readouterr().err == \
        f"dbparallel: error: {starting.uri()}: not a run directory (no config.yaml)\n"
    storage = tiny_run_dir(tmp_path)  # a run's processes: one of a --block 1 on another machine
    write_runner(storage, "other-host", 4242)  # renewed, and a Ray run's driver there
    write_runner(storage, "other-host", 4343, name="d", session="0123abcd@other-host:4343")
    assert cli.main(["status", storage.uri()]) == 0
    lines = capsys.readouterr().out.splitlines()  # told where stop can signal them
    there = "it runs on other-host, another machine or container: `dbparallel stop` run there " \
        "stops it"
    assert ("running: other-host/4242 (a --local process between blocks, or still checking the "
            f"data: it holds no block's lease now; {there})") in lines
    assert ("running: other-host/4343 (the Ray run's driver: no block process of it writes now; "
            "it checks the data on the cluster, waits for the cluster to place the blocks, or "
            f"starts their processes; {there})") in lines
    (tmp_path / "run" / RUNNING_DIR / "d.json").unlink()
    write_runner(storage, "other-host", 4242, renewed_ago_s=61, timeout_s=60)  # lapsed
    write_runner(storage, HOST, 999_999_999, name="b")  # killed
    assert cli.main(["stop", storage.uri()]) == 0
    assert re.fullmatch(
        r"the run: counted as stopped: its record lapsed \(renewed \d+ s ago by pid 4242 on "
        r"other-host, past its writer's train.lease_timeout_s=60 s\); nothing signalled\n",
        capsys.readouterr().out)
    assert dbparallel.status(storage.uri()).runners == []
    (tmp_path / "run" / RUNNING_DIR / "a.json").write_text('{"holder": ')
    assert cli.main(["stop", storage.uri()]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"the run: {storage.uri(RUNNING_DIR + '/a.json')}: damaged"), out
    assert dbparallel.status(storage.uri()).problems[0].startswith(
        f"{storage.uri(RUNNING_DIR + '/a.json')}: damaged")


def test_status_and_a_refusal_word_what_stops_a_process_elsewhere_alike(tmp_path: Path,
                                                                        capsys) -> None:
    # one helper words it for both: a run starting in a directory (the refusal of a command
    # that reads a run directory) and a run's `running:` line of status
    assert stopped_by("`dbparallel stop`") == "`dbparallel stop` stops it"
    starting = Storage(str(tmp_path / "new"))
    write_runner(starting, "host-b", 4242)
    write_runner(starting, "host-a", 4343, name="b")
    assert cli.main(["status", starting.uri()]) == 2
    assert capsys.readouterr().err.endswith(
        "; it runs on host-a and host-b, another machine or container: "
        f"`dbparallel stop {starting.uri()}` run there stops it\n")
    storage = tiny_run_dir(tmp_path)
    write_runner(storage, "host-a", 4242)
    assert cli.main(["status", storage.uri()]) == 0
    assert ("running: host-a/4242 (a --local process between blocks, or still checking the "
            "data: it holds no block's lease now; "
            f"{stopped_by('`dbparallel stop`', 'host-a')})") in capsys.readouterr().out


def test_the_record_goes_with_its_run_and_so_do_gone_ones_and_a_directory_made_for_it(
        tmp_path: Path) -> None:
    cfg = load_config([TINY], [f"run.dir={tmp_path / 'run'}"])
    storage = Storage(cfg.run_dir)
    with pytest.raises(RunDirError, match="refused"), running(cfg, [1]):
        found = storage.listdir(RUNNING_DIR)
        record = json.loads((tmp_path / "run" / RUNNING_DIR / found[0]).read_text())
        raise RunDirError("refused")  # a refusal, a bad row: it stops before open_run
    assert record["blocks"] == [1] and f"/{HOST}/" in record["holder"]
    assert not (tmp_path / "run").exists()  # made for the record alone: removed with it
    storage = tiny_run_dir(tmp_path)
    write_runner(storage, HOST, 999_999_999, name="killed")
    write_runner(storage, "other-host", 4242, name="elsewhere", blocks=[0])
    # a killed pod's, lapsed for ten of its timeouts: gone; one just lapsed is kept to be named
    write_runner(storage, "old-pod", 4242, name="stale", renewed_ago_s=601, timeout_s=60)
    write_runner(storage, "new-pod", 4242, name="lapsed", renewed_ago_s=61, timeout_s=60)
    with running(cfg, [1]):
        names = storage.listdir(RUNNING_DIR)
    assert {"elsewhere.json", "lapsed.json"} <= set(names) and len(names) == 3
    assert sorted(storage.listdir(RUNNING_DIR)) == ["elsewhere.json", "lapsed.json"]
    assert (tmp_path / "run" / "config.yaml").exists()  # a run directory stays


def test_a_run_whose_config_is_damaged_is_stopped_from_its_record_and_the_damage_named(
        tmp_path: Path, capsys) -> None:
    """config.yaml unreadable, the run's process recorded in running/: stopped all the same,
    with one line naming config.yaml (which the same train command needs back to resume)."""
    import signal
    import subprocess
    import sys

    from dbparallel.training.holder import process_start

    storage = tiny_run_dir(tmp_path)
    (tmp_path / "run" / "config.yaml").write_text("model: [\n")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with ended(proc):
        write_runner(storage, HOST, proc.pid, start=process_start(proc.pid))
        code = cli.main(["stop", storage.uri(), "--wait", str(HANG_S)])
        assert proc.wait(timeout=HANG_S) == -signal.SIGTERM
    out = capsys.readouterr().out.splitlines()
    assert code == 0, out
    assert out[0].startswith(f"{storage.uri('config.yaml')}: damaged, not readable (not valid "
                             f"YAML"), out
    assert out[1:] == [*_said(proc.pid)[:-1],
                       "the same train command resumes the run once its config.yaml is "
                       "restored"]
