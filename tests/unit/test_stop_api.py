"""``dbparallel stop`` on a run started from Python: ``dbparallel.train`` takes SIGTERM for
the call where its program left the default, stops as the command does (leases released)
and raises ``dbparallel.Terminated``; a handler the program set is left as it is."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from holders import HANG_S, ended, stop, wait_training

import dbparallel
from dbparallel.cli_stop import StopSignals, stop_on_sigterm

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "jobs" / "tiny_cpu.yaml")

# A program that trains block 1 from Python and says how the call ended.
SCRIPT = """
import json, signal, sys
import dbparallel

try:
    dbparallel.train(sys.argv[1], overrides={"run.dir": sys.argv[2], "metrics.port": 0,
                     "train.steps": 100000, "train.checkpoint_every": 2}, local=True, blocks=[1])
    said = "returned"
except dbparallel.Terminated as err:
    said = f"Terminated: {err}"
print(json.dumps({"said": said, "default_after": signal.getsignal(signal.SIGTERM)
                  == signal.SIG_DFL}))
"""


def test_a_run_started_from_python_stops_releasing_its_lease(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, TINY, str(run)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lease = run / "blocks" / "block_1" / "lease.json"
    with ended(proc):
        wait_training(lease.parent, proc)
        stopped = stop(run, proc, capsys)
    code, out, stdout, err = stopped.code, stopped.out, stopped.stdout, stopped.err
    assert code == 0, (out, err)
    assert out[0] == f"block 1: pid {proc.pid} on {socket.gethostname()} trains it: SIGTERM sent"
    assert out[-2:] == ["block 1: stopped, its lease released",
                        "the same train command resumes the run"]
    assert proc.returncode == 0, err
    assert json.loads(stdout.splitlines()[-1]) == {
        "said": "Terminated: stopped by SIGTERM (`dbparallel stop`, kill): the checkpoints "
                "written stay, the blocks' write leases are released, and the same train "
                "call resumes the run", "default_after": True}
    assert json.loads(lease.read_text())["holder"] == ""
    assert dbparallel.status(run).blocks[1].state == "stopped"


@pytest.fixture
def default_sigterm():
    """SIGTERM's default handler during the test, whatever ran before it."""
    before = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGTERM, before)


def test_sigterm_is_taken_for_the_call_only_and_sigint_never(default_sigterm) -> None:
    sigint = signal.getsignal(signal.SIGINT)
    with stop_on_sigterm() as stop:
        assert isinstance(stop, StopSignals) and signal.getsignal(signal.SIGTERM) is stop
        assert signal.getsignal(signal.SIGINT) is sigint
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_a_handler_the_program_set_is_left_as_it_is(default_sigterm) -> None:
    def programs(signum: int, frame: object) -> None:
        pass

    signal.signal(signal.SIGTERM, programs)
    with stop_on_sigterm() as stop:
        assert stop is None and signal.getsignal(signal.SIGTERM) is programs
    assert signal.getsignal(signal.SIGTERM) is programs


def test_a_call_from_another_thread_takes_no_signal(default_sigterm) -> None:
    seen = []

    def call() -> None:
        with stop_on_sigterm() as stop:
            seen.append((stop, signal.getsignal(signal.SIGTERM)))

    thread = threading.Thread(target=call)
    thread.start()
    thread.join()
    assert seen == [(None, signal.SIG_DFL)]


def test_sigterm_raises_terminated_where_a_ray_call_raised_a_plain_interrupt(
        default_sigterm, monkeypatch: pytest.MonkeyPatch) -> None:
    def cut_short(*args) -> dict:
        handler = signal.getsignal(signal.SIGTERM)
        assert isinstance(handler, StopSignals)  # (else the signal would end this process)
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(HANG_S)
        except KeyboardInterrupt:
            raise KeyboardInterrupt() from None  # as Ray's call raises it
        raise AssertionError("SIGTERM did not interrupt")

    monkeypatch.setattr(dbparallel, "_train", cut_short)
    with pytest.raises(dbparallel.Terminated, match="stopped by SIGTERM"):
        dbparallel.train(TINY)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
