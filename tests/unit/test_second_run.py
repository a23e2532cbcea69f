"""A second run of a run directory while a first one runs it is refused, also while the first
holds no block's lease (it checks the data, or is between two blocks): the first's
``running/`` record names it (training/running.py ``refuse_running``). ``--local --block``
processes of disjoint blocks still run side by side; a record of a process that is gone, or a
lapsed one of another machine, refuses nothing. The first run is a real process, paused at a
chosen point (holders.PAUSED)."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
from holders import ROOT, ended, paused, wait_paused, write_runner

from dbparallel import cli
from dbparallel.config import load_config
from dbparallel.errors import RunDirError
from dbparallel.training.run_dir import open_run
from dbparallel.training.running import RUNNING_DIR, running
from dbparallel.training.storage import Storage

TINY = str(ROOT / "jobs" / "tiny_cpu.yaml")
HOST = socket.gethostname()
FAST = ["metrics.port=0", "train.steps=2", "train.warmup_steps=0"]


def _files(run: Path) -> dict[str, bytes]:
    """Every file under ``run`` with its bytes; of the records in running/, their names only
    (the first process renews its own while it waits)."""
    return {str(p.relative_to(run)): b"" if p.parent.name == RUNNING_DIR else p.read_bytes()
            for p in sorted(run.rglob("*")) if p.is_file()}


def _refused(pid: int, run: Path, what: str) -> str:
    """The error line of a run refused while pid ``pid`` of this machine runs ``what``."""
    return (rf"dbparallel: error: {re.escape(str(run))}: another process runs this run \(pid "
            rf"{pid} on {re.escape(HOST)}, training {what}; its record renewed \d+ s ago\), "
            rf"which still runs on this machine: stop it first \(`dbparallel stop "
            rf"{re.escape(str(run))}` on {re.escape(HOST)}\), or run again once it has ended\n")


def test_a_second_run_is_refused_while_the_first_is_between_blocks(tmp_path: Path,
                                                                   capsys) -> None:
    run, mark = tmp_path / "run", tmp_path / "paused"
    train = ["train", TINY, "--local", f"run.dir={run}", *FAST]
    proc = paused("block 1", mark, "command", *train[1:])
    with ended(proc):
        wait_paused(mark, proc)
        before = _files(run)
        codes = [cli.main(train), cli.main([*train, "data.validate=false"]),
                 cli.main([*train, "--block", "1"])]
        errs = capsys.readouterr().err
        after = _files(run)
    assert codes == [2, 2, 2], errs
    assert re.fullmatch(_refused(proc.pid, run, "every block") * 3, errs), errs
    assert after == before  # nothing written
    assert len(list((run / RUNNING_DIR).iterdir())) == 1  # killed outright: its record left
    open_run(load_config([TINY], [f"run.dir={run}", *FAST]))  # its process is gone: no refusal


def test_block_processes_of_disjoint_blocks_run_side_by_side(tmp_path: Path, capsys) -> None:
    run, mark = tmp_path / "run", tmp_path / "paused"
    train = ["train", TINY, "--local", f"run.dir={run}", *FAST]
    proc = paused("data check", mark, "command", *train[1:], "--block", "0")
    with ended(proc):
        wait_paused(mark, proc)  # its record written, no config.yaml yet
        assert cli.main([*train, "--block", "1"]) == 0  # trains block 1 meanwhile
        capsys.readouterr()
        before = _files(run)
        codes = [cli.main(train), cli.main([*train, "--block", "0"])]
        errs = capsys.readouterr().err
        after = _files(run)
    assert codes == [2, 2], errs
    assert re.fullmatch(_refused(proc.pid, run, "block 0") * 2, errs), errs
    assert after == before
    assert "blocks/block_1/manifest.json" in before and "blocks/block_0/lease.json" not in before


def _run_dir(tmp_path: Path) -> tuple[Storage, object]:
    """A run directory of the tiny recipe, opened once, and its config."""
    cfg = load_config([TINY], [f"run.dir={tmp_path / 'run'}"])
    return open_run(cfg), cfg


def test_records_of_other_machines_refuse_until_they_lapse(tmp_path: Path) -> None:
    storage, cfg = _run_dir(tmp_path)
    write_runner(storage, "other-host", 4242, name="lapsed", renewed_ago_s=61, timeout_s=60)
    write_runner(storage, HOST, 999_999_999, name="gone")  # killed
    write_runner(storage, "other-host", 4343, name="block0", blocks=[0])  # a --block 0
    (tmp_path / "run" / RUNNING_DIR / "damaged.json").write_text('{"holder": ')
    open_run(cfg, [1])  # none of them trains block 1
    with running(cfg, [1]):  # this process's own record refuses nothing
        with pytest.raises(RunDirError) as refused:
            open_run(cfg)
    with pytest.raises(RunDirError) as at_start, running(cfg):  # refused before its data check
        pytest.fail("went on beside a live record of block 0")
    assert re.sub(r"renewed \d+ s", "", str(at_start.value)) == \
        re.sub(r"renewed \d+ s", "", str(refused.value))
    assert re.fullmatch(re.escape(
        f"{storage.uri()}: another process runs this run (pid 4343 on other-host, training "
        f"block 0; its record renewed ") + r"\d+" + re.escape(
        f" s ago); stop it first (`dbparallel stop {storage.uri()}` on other-host) or wait its "
        f"writer's train.lease_timeout_s=60 s for its record to lapse (if no process runs the "
        f"run any more, e.g. a killed one, delete {storage.uri(RUNNING_DIR + '/block0.json')})"),
        str(refused.value)), str(refused.value)
    (tmp_path / "run" / RUNNING_DIR / "block0.json").unlink()
    with running(cfg):
        open_run(cfg)  # nothing live left
    write_runner(storage, "head-node", 4000, session="0123abcd@head-node:4000")  # a Ray driver
    with pytest.raises(RunDirError, match=re.escape(
            "(the Ray run whose driver is pid 4000 on head-node, training every block; its "
            "record renewed ") + r"\d+" + re.escape(
            f" s ago); stop it first (`dbparallel stop {storage.uri()}` on head-node, Ctrl-C, "
            f"or `ray job stop` for a submitted job)")):
        open_run(cfg, [1])
