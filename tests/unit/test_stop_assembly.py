"""``dbparallel stop`` on a ``--local`` run assembling its blocks, which holds no lease then:
the process records itself in ``assembling.json`` (training/assembling.py) and is stopped
from there as a lease's holder is."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from holders import HANG_S, ended, stop, wait_assembling, write_assembly

import dbparallel
from dbparallel import cli
from dbparallel.config import dump_yaml, load_config
from dbparallel.training.assembling import ASSEMBLING_FILE, assembler, assembling
from dbparallel.training.storage import Storage

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "jobs" / "tiny_cpu.yaml")
HOST = socket.gethostname()


def test_a_local_run_assembling_its_blocks_is_stopped(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    proc = subprocess.Popen(  # trained in a moment; its samples' million steps take long
        [sys.executable, "-m", "dbparallel", "train", TINY, "--local", f"run.dir={run}",
         "metrics.port=0", "train.steps=2", "train.warmup_steps=0", "sample.steps=1000000"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    with ended(proc):
        wait_assembling(run, proc)
        stopped = stop(run, proc, capsys)
    code, out, err = stopped.code, stopped.out, stopped.err
    assert code == 0, (out, err)
    assert out == [f"the run's assembly: pid {proc.pid} on {HOST} assembles it: SIGTERM sent",
                   f"waiting for pid {proc.pid} to stop (up to {HANG_S} s) ...",
                   "the run's assembly: stopped", "the same train command resumes the run"]
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == \
        "dbparallel: stopped (SIGTERM) (run the same command again to resume)"
    assert not (run / ASSEMBLING_FILE).exists() and not (run / "report.json").exists()
    assert dbparallel.status(run).state == "trained, not yet assembled"


def _run_dir(tmp_path: Path) -> Storage:
    """A run directory of the tiny recipe, its config written and nothing trained."""
    run = tmp_path / "run"
    storage = Storage(str(run))
    storage.makedirs()
    storage.write_text("config.yaml", dump_yaml(load_config([TINY], [f"run.dir={run}"])))
    return storage


def test_an_assembly_elsewhere_is_named_and_a_gone_one_is_nothing_to_stop(
        tmp_path: Path, capsys) -> None:
    storage = _run_dir(tmp_path)
    run = storage.uri()
    write_assembly(storage, "other-host", 4242)
    assert cli.main(["stop", run]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"the run's assembly: run by pid 4242 on other-host, of another machine or "
        f"container, which cannot be signalled from here: run `dbparallel stop {run}` on "
        f"other-host (or `kill 4242` there)"]
    write_assembly(storage, "other-host", 4242, renewed_ago_s=61, timeout_s=60)
    assert cli.main(["stop", run]) == 0  # not renewed for its lease timeout: nothing to stop
    assert re.fullmatch(
        r"the run's assembly: counted as stopped: its record lapsed \(renewed \d+ s ago by pid "
        r"4242 on other-host, past its writer's train.lease_timeout_s=60 s\); nothing "
        r"signalled\n", capsys.readouterr().out)
    write_assembly(storage, HOST, 999_999_999)  # killed: its record left behind
    assert cli.main(["stop", run]) == 0
    assert capsys.readouterr().out == f"{run}: no block's write lease is held: nothing to stop\n"
    storage.write_text(ASSEMBLING_FILE, '{"holder": ')
    assert cli.main(["stop", run]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"the run's assembly: {storage.uri(ASSEMBLING_FILE)}: damaged"), out


def test_a_lapsed_record_of_a_process_that_lives_on_is_no_assembly(
        tmp_path: Path, capsys) -> None:
    """Its removal failed at the assembly's end (a store read-only then), and the process
    went on (a program that called ``dbparallel.train``): once unrenewed for its timeout it
    counts as gone (a trained run reads as an assembly cut short), and ``stop`` signals
    nothing."""
    from dbparallel.training.holder import process_start

    storage = _run_dir(tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with ended(proc):
        write_assembly(storage, HOST, proc.pid, start=process_start(proc.pid))
        assert dbparallel.status(storage.uri()).assembler_alive is True  # renewed: it runs
        write_assembly(storage, HOST, proc.pid, start=process_start(proc.pid),
                       renewed_ago_s=61, timeout_s=60)
        status = dbparallel.status(storage.uri())
        assert cli.main(["stop", storage.uri()]) == 0
        assert proc.poll() is None  # not signalled
    assert (status.assembler_alive, status.assembler_lapsed) == (False, True)
    assert re.fullmatch(
        rf"the run's assembly: counted as stopped: its record lapsed \(renewed \d+ s ago by "
        rf"pid {proc.pid} on {re.escape(HOST)}, past its writer's train.lease_timeout_s=60 s\); "
        rf"nothing signalled\n", capsys.readouterr().out)


def test_the_record_is_removed_however_the_assembly_ends(tmp_path: Path) -> None:
    storage = _run_dir(tmp_path)
    with assembling(storage, 60.0):
        record = assembler(storage)
        assert record is not None and f"/{HOST}/" in record["holder"]
    assert assembler(storage) is None
    with pytest.raises(KeyboardInterrupt), assembling(storage, 60.0):
        raise KeyboardInterrupt()  # Ctrl-C, or SIGTERM (Terminated)
    assert assembler(storage) is None
    with assembling(storage, 60.0):
        write_assembly(storage, "other-host", 4242)  # a later assembly's, written over this one
    assert assembler(storage)["holder"].startswith("0123abcd/other-host/4242/")


def test_the_record_is_renewed_while_the_assembly_runs(tmp_path: Path) -> None:
    storage = _run_dir(tmp_path)
    with assembling(storage, 0.3):  # renewed every 0.1 s
        first = assembler(storage)
        deadline = time.monotonic() + HANG_S  # a hang guard only
        while assembler(storage)["renewed"] == first["renewed"]:
            assert time.monotonic() < deadline, "the record was never renewed"
            time.sleep(0.05)
        renewed = assembler(storage)
    assert renewed["since"] == first["since"] and renewed["renewed"] > first["renewed"]
    assert renewed["holder"] == first["holder"] and assembler(storage) is None
