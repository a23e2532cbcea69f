"""``dbparallel status`` of a run being assembled: the process that records itself in
``assembling.json`` (training/assembling.py), whether it still runs, and an assembly cut
short, whose process is gone."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from holders import ended, wait_assembling

import dbparallel
from dbparallel import cli
from dbparallel.training.assembling import ASSEMBLING_FILE, assembling
from dbparallel.training.holder import driver_session, process_space
from dbparallel.training.status import REPORT_REMEDY
from dbparallel.training.storage import Storage

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "jobs" / "tiny_cpu.yaml")
HOST = socket.gethostname()
TRAIN = ["train", TINY, "--local", "metrics.port=0", "train.steps=2", "train.warmup_steps=0"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-block run of the tiny recipe (2 steps a block), report.json written."""
    run = tmp_path_factory.mktemp("trained") / "run"
    assert cli.main([*TRAIN, f"run.dir={run}"]) == 0
    return run


@pytest.fixture
def run(trained: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def _status(run: Path, capsys) -> tuple[dict, list[str]]:
    """``dbparallel status RUN`` as JSON and as text lines."""
    assert cli.main(["status", "--json", str(run)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert cli.main(["status", str(run)]) == 0
    return shown, capsys.readouterr().out.splitlines()


def _line(lines: list[str], start: str) -> str:
    found = [line for line in lines if line.startswith(start)]
    assert len(found) == 1, lines
    return found[0]


def _record(run: Path, host: str, pid: int | str, start: str = "") -> None:
    """An assembling.json naming pid ``pid`` of ``host`` (of this process space), which
    started at ``start`` (process_start) where given."""
    holder = f"0123abcd/{host}/{pid}/0123abcd/{process_space()}" + (f"/{start}" * bool(start))
    Storage(str(run)).write_json(ASSEMBLING_FILE, {"holder": holder, "since": time.time()})


def test_a_local_run_assembling_and_cut_short_and_assembled_again(
        trained: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"  # (``trained`` made the assembly's classifier once, in the cache)
    proc = subprocess.Popen(  # trained in a moment; its samples' million steps take long
        [sys.executable, "-m", "dbparallel", *TRAIN, f"run.dir={run}", "sample.steps=1000000"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with ended(proc):
        wait_assembling(run, proc)
        shown, lines = _status(run, capsys)
        proc.kill()  # killed outright: its record stays behind
        proc.wait()
        cut, cut_lines = _status(run, capsys)
    assert shown["state"] == "being assembled", shown
    assert (shown["assembler"], shown["assembler_alive"], shown["assembler_driver"]) == \
        (f"{HOST}/{proc.pid}", True, False)
    assert shown["assembling_since"] <= time.time() and shown["assembling_age_s"] >= 0
    assert lines[0] == f"{run}: dit, 2 blocks, being assembled"
    assert _line(lines, "assembling: ").startswith(f"assembling: {HOST}/{proc.pid}, begun ")
    assert (cut["state"], cut["assembler"], cut["assembler_alive"]) == \
        ("trained, assembly cut short", f"{HOST}/{proc.pid}", False)
    said = _line(cut_lines, "assembly cut short: ")
    assert said.startswith(f"assembly cut short: {HOST}/{proc.pid} began it ")
    assert said.endswith(f" and no longer runs (killed outright: a stop removes its record); "
                         f"{REPORT_REMEDY}")
    assert cli.main([*TRAIN, f"run.dir={run}"]) == 0  # what the line says: it assembles again
    capsys.readouterr()
    again = dbparallel.status(run)
    assert (again.state, again.assembler) == ("finished", "")
    assert not (run / ASSEMBLING_FILE).exists()


def test_this_process_assembling_an_earlier_assembly_that_one_took_over(run: Path,
                                                                        capsys) -> None:
    storage = Storage(str(run))
    with assembling(storage, driver_session()):  # as a Ray run's driver records itself
        shown, lines = _status(run, capsys)
    assert shown["state"] == "being assembled"  # again: report.json is an earlier one's
    assert (shown["assembler"], shown["assembler_alive"], shown["assembler_driver"]) == \
        (f"{HOST}/{os.getpid()}", True, True)
    assert _line(lines, "assembling: ").startswith(
        f"assembling: {HOST}/{os.getpid()} (the Ray run's driver), begun ")
    assert dbparallel.status(run).state == "finished"  # the record removed
    _record(run, HOST, os.getpid(), start="1")  # its pid, now another process's
    shown, lines = _status(run, capsys)
    assert (shown["state"], shown["assembler_alive"]) == ("finished", False)
    assert _line(lines, "assembly cut short: ")
    (run / "report.json").unlink()
    _record(run, HOST, 999_999_999)  # gone, its start not recorded
    assert dbparallel.status(run).state == "trained, assembly cut short"


def test_an_assembly_on_another_machine_and_a_damaged_record(run: Path, capsys) -> None:
    _record(run, "other-host", 4242)
    shown, lines = _status(run, capsys)
    assert (shown["state"], shown["assembler"], shown["assembler_alive"]) == \
        ("being assembled", "other-host/4242", None)
    said = _line(lines, "assembling: ")
    assert said.startswith("assembling: other-host/4242, begun ")
    assert said.endswith(" ago (of another machine or container: whether it still runs "
                         "cannot be asked from here)")
    (run / ASSEMBLING_FILE).write_text('{"holder": ')
    shown, lines = _status(run, capsys)
    assert (shown["state"], shown["assembler"]) == ("finished", "")
    assert _line(lines, "problem: ").startswith(
        f"problem: {Storage(str(run)).uri(ASSEMBLING_FILE)}: damaged")
