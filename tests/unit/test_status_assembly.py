"""``dbparallel status`` of a run being assembled: the process that records itself in
``assembling.json`` (training/assembling.py), whether it still runs, and an assembly cut
short, whose process is gone."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from holders import ended, wait_assembling, write_assembly

import dbparallel
import dbparallel.runtime.local as local
from dbparallel import cli
from dbparallel.training.assembling import ASSEMBLING_FILE, assembling
from dbparallel.training.holder import driver_session
from dbparallel.training.report import REPORT_REMEDY
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
    with assembling(storage, 60.0, driver_session()):  # as a Ray run's driver records itself
        shown, lines = _status(run, capsys)
    assert shown["state"] == "being assembled"  # again: report.json is an earlier one's
    assert (shown["assembler"], shown["assembler_alive"], shown["assembler_driver"]) == \
        (f"{HOST}/{os.getpid()}", True, True)
    assert _line(lines, "assembling: ").startswith(
        f"assembling: {HOST}/{os.getpid()} (the Ray run's driver), begun ")
    assert dbparallel.status(run).state == "finished"  # the record removed
    write_assembly(storage, HOST, os.getpid(), start="1")  # its pid, now another process's
    shown, lines = _status(run, capsys)
    assert (shown["state"], shown["assembler_alive"]) == ("finished", False)
    assert _line(lines, "assembly cut short: ")
    (run / "report.json").unlink()
    write_assembly(Storage(str(run)), HOST, 999_999_999)  # gone, its start not recorded
    assert dbparallel.status(run).state == "trained, assembly cut short"


def test_an_assembly_on_another_machine_and_a_damaged_record(run: Path, capsys) -> None:
    write_assembly(Storage(str(run)), "other-host", 4242)
    shown, lines = _status(run, capsys)
    assert (shown["state"], shown["assembler"], shown["assembler_alive"]) == \
        ("being assembled", "other-host/4242", None)
    said = _line(lines, "assembling: ")
    assert said.startswith("assembling: other-host/4242, begun ")
    assert said.endswith(" ago (of another machine or container: whether it still runs "
                         "cannot be asked from here)")
    (run / "report.json").unlink()  # (a finished run's record would not change its state)
    write_assembly(Storage(str(run)), "other-host", 4242, renewed_ago_s=61, timeout_s=60)
    shown, lines = _status(run, capsys)  # not renewed for its lease timeout: counted as gone
    assert (shown["state"], shown["assembler_alive"], shown["assembler_lapsed"]) == \
        ("trained, assembly cut short", False, True)
    said = _line(lines, "assembly cut short: ")
    assert said.startswith("assembly cut short: other-host/4242 began it ")
    assert " ago and has not renewed its record within its train.lease_timeout_s (so it is " \
        "counted as gone); " in said
    (run / ASSEMBLING_FILE).write_text('{"holder": ')
    shown, lines = _status(run, capsys)
    assert (shown["state"], shown["assembler"]) == ("trained, not yet assembled", "")
    assert _line(lines, "problem: ").startswith(
        f"problem: {Storage(str(run)).uri(ASSEMBLING_FILE)}: damaged")


def test_report_json_is_written_before_the_assembly_s_record_goes(
        trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No moment in which every block is done, the record gone and report.json not yet
    written: status would read ``trained, not yet assembled``."""
    run, seen = tmp_path / "run", []  # (``trained``: the classifier made once, as above)
    record = local.assembling

    @contextlib.contextmanager
    def watched(*args, **kwargs):
        with record(*args, **kwargs):
            yield
            seen.append((dbparallel.status(run).state, (run / "report.json").exists()))

    monkeypatch.setattr(local, "assembling", watched)
    assert cli.main([*TRAIN, f"run.dir={run}"]) == 0
    assert seen == [("being assembled", True)]  # the record's last moment
    assert dbparallel.status(run).state == "finished"


def test_a_run_read_as_its_assembly_ends_is_being_assembled_or_finished(
        trained: Path, tmp_path: Path) -> None:
    """The assembling process writes report.json, then removes its record, while status
    reads the run: it used to read report.json first and the record last, so a run read
    across the two had neither: ``trained, not yet assembled``."""
    from holders import Interleaved

    from dbparallel.training.run_files import run_config
    from dbparallel.training.status import run_status

    cfg, report = run_config(str(trained)), (trained / "report.json").read_bytes()

    def end(storage: Storage) -> None:
        storage.write_bytes("report.json", report)
        storage.delete(ASSEMBLING_FILE)

    seen = []
    for n in itertools.count():
        shutil.copytree(trained, tmp_path / str(n))
        (tmp_path / str(n) / "report.json").unlink()
        storage = Interleaved(str(tmp_path / str(n)), n, end)
        write_assembly(storage, HOST, os.getpid())
        storage.reads = 0
        seen.append(run_status(storage, cfg).state)
        if storage.reads <= n:
            break
    assert len(seen) > 3 and seen[0] == "finished" and seen[-1] == "being assembled"
    assert set(seen) == {"being assembled", "finished"}, seen
