"""Ctrl-C and SIGTERM: the first stops the command where it is, a second during its cleanup
is told what is under way and lets the cleanup finish, a third quits at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

# A command whose work is stopped by its first signal and whose cleanup is sent the rest:
# the signals come from the process itself, so when each arrives does not depend on timing.
SCRIPT = """
import os, signal, sys, time
from dbparallel import cli

signame, more, plain = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "plain"

def work(args):
    print("work began")  # buffered: stdout is a pipe
    try:
        try:
            os.kill(os.getpid(), getattr(signal, signame))
            time.sleep(60)
            print("not stopped", flush=True)
        except KeyboardInterrupt:
            if plain:  # as a Ray call the signal interrupts raises it, whatever the handler's
                raise KeyboardInterrupt() from None
            raise
    finally:
        for _ in range(more):
            os.kill(os.getpid(), getattr(signal, signame))
            time.sleep(0.2)
        print("cleanup finished", flush=True)

cli.cmd_plot = work
sys.exit(cli.main(["plot", "some_run"]))
"""


def _run(signame: str, more: int, plain: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, signame, str(more), "plain" if plain else "as-raised"],
        capture_output=True, text=True,
        timeout=120,  # as from a terminal: SIGINT not ignored, whoever started the suite
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


@pytest.mark.parametrize(("signame", "code", "said"), [
    ("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "stopped (SIGTERM)")])
def test_a_second_signal_lets_the_cleanup_finish(signame: str, code: int, said: str) -> None:
    done = _run(signame, 1)
    assert done.returncode == code, done.stderr
    assert done.stdout == "work began\ncleanup finished\n"
    assert "dbparallel: stopping: the run's cleanup (its write leases released" in done.stderr
    assert done.stderr.strip().splitlines()[-1] == f"dbparallel: {said}"
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("signame", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_the_first_signal_decides_the_exit_code_whatever_ray_raises(signame: str,
                                                                      code: int) -> None:
    """Ray turns the exception a signal handler raises inside its calls into a plain
    KeyboardInterrupt: SIGTERM still exits 143 and says so."""
    done = _run(signame, 0, plain=True)
    assert done.returncode == code, done.stderr
    assert done.stderr.strip().splitlines()[-1] == \
        f"dbparallel: {'stopped (SIGTERM)' if code == 143 else 'interrupted'}"


# `dbparallel train` whose training is stopped by SIGTERM at once (`dbparallel stop`, `ray job
# stop`), as the installed script runs it: its file is named dbparallel
TRAIN_SCRIPT = """
import os, signal, sys, time
from dbparallel import cli

def work(args):
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(60)

cli.cmd_train = work
sys.exit(cli.main())
"""


@pytest.mark.parametrize("job", [False, True], ids=["command", "ray-job"])
def test_a_stopped_run_says_to_run_it_again_and_a_ray_job_to_resubmit_it(
        tmp_path: Path, job: bool) -> None:
    script = tmp_path / "dbparallel"
    script.write_text(TRAIN_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "RAY_JOB_CONFIG_JSON_ENV_VAR"}
    if job:  # as Ray's job manager starts a job's entrypoint
        env["RAY_JOB_CONFIG_JSON_ENV_VAR"] = json.dumps(
            {"runtime_env": {}, "metadata": {"job_submission_id": "raysubmit_a1",
                                             "job_name": "raysubmit_a1"}})
    done = subprocess.run([sys.executable, str(script), "train", "jobs/tiny_cpu.yaml",
                           "run.dir=s3://b/my run"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 143, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "dbparallel: stopped (SIGTERM) " + (
        "(resubmit the same job to resume: `ray job submit ... -- dbparallel train "
        "jobs/tiny_cpu.yaml 'run.dir=s3://b/my run'`)" if job
        else "(run the same command again to resume)")


def test_a_third_signal_quits_at_once() -> None:
    done = _run("SIGINT", 2)
    assert done.returncode == 130
    # the cleanup did not finish; what the run printed before the quit is kept
    assert done.stdout == "work began\n"
    assert done.stderr.strip().splitlines()[-1].startswith(
        "dbparallel: quit without cleaning up")


def test_the_handlers_before_a_command_are_put_back() -> None:
    from dbparallel.cli import main

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    assert main(["status", "/nonexistent/run"]) == 2
    assert {s: signal.getsignal(s) for s in before} == before


def test_a_sigint_ignored_from_the_start_stays_ignored() -> None:
    """A background job (`cmd &` in a script) is started with SIGINT ignored: Ctrl-C meant
    for the foreground must not stop it."""
    script = ("import signal, sys\n"
              "from dbparallel.cli_stop import stop_signals\n"
              "with stop_signals():\n"
              "    sys.exit(0 if signal.getsignal(signal.SIGINT) == signal.SIG_IGN else 1)\n")
    done = subprocess.run([sys.executable, "-c", script], timeout=60,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert done.returncode == 0
