"""A finished run keeps serving its final scores (the assembly gauges) for metrics.linger_s
after its report.json is written, so that a scrape reads them; `dbparallel stop` (or Ctrl-C)
ends the wait with the run done."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
from holders import HANG_S, ROOT, _wait, ended

from dbparallel import cli
from dbparallel.config import load_config
from dbparallel.errors import ConfigError
from dbparallel.runtime.linger import linger
from dbparallel.training.running import RUNNING_DIR

TINY = str(ROOT / "jobs" / "tiny_cpu.yaml")
FAST = ["train.steps=2", "train.warmup_steps=0", "sample.eval_samples=10",
        "sample.per_class=1", "sample.steps=2", "run.curves=false"]
SERVED = "metrics: the final scores stay served at http://127.0.0.1:{port}/metrics for 600 s"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lines(stream) -> tuple[list[str], threading.Thread]:
    """The lines ``stream`` gives, gathered by the thread returned as they come."""
    lines: list[str] = []
    thread = threading.Thread(target=lambda: lines.extend(
        line.rstrip("\n") for line in iter(stream.readline, "")), daemon=True)
    thread.start()
    return lines, thread


def test_a_local_run_serves_its_final_scores_after_its_report_until_stopped(
        tmp_path: Path, capsys) -> None:
    run, port = tmp_path / "run", _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dbparallel", "train", "--local", TINY, f"run.dir={run}",
         f"metrics.port={port}", "metrics.linger_s=600", *FAST],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with ended(proc):
        (out, reading), (err, _) = _lines(proc.stdout), _lines(proc.stderr)
        _wait(lambda: any(line.startswith(SERVED.format(port=port)) for line in out), proc,
              f"no line saying the final scores stay served: {out}")
        report = json.loads((run / "report.json").read_text())  # written before the wait
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                      timeout=10).read().decode()
        series = (f'ray_dbparallel_assembly_sample_accuracy{{run="tiny-cpu",'
                  f'run_id="{report["run_id"]}"}} ')
        (value,) = re.findall(rf"^{re.escape(series)}(\S+)$", text, re.M)
        assert float(value) == pytest.approx(report["assembly"]["sample_accuracy"])
        assert cli.main(["status", str(run)]) == 0
        status = capsys.readouterr().out
        assert status.splitlines()[0].endswith(", finished")
        assert ("or its run is finished and it still serves the final scores "
                "(metrics.linger_s)") in status
        assert cli.main(["stop", str(run), "--wait", str(HANG_S)]) == 0
        said = capsys.readouterr().out
        proc.wait(timeout=HANG_S)
        reading.join(timeout=HANG_S)
    assert proc.returncode == 0, err  # the run is done: not "stopped (SIGTERM)"
    assert "SIGTERM sent" in said
    assert "metrics: stopped serving the final scores; the run is done" in out
    assert not any("stopped (SIGTERM)" in line or "Traceback" in line for line in err), err
    assert json.loads((run / "report.json").read_text()) == report
    assert not list((run / RUNNING_DIR).glob("*.json"))  # its record withdrawn


def test_no_wait_where_none_is_asked_or_nothing_is_served(tmp_path: Path, capsys) -> None:
    def never(seconds: float) -> None:
        raise AssertionError("waited")

    assert linger(0.0, "here", sleep=never)
    assert capsys.readouterr().out == ""
    # a local run that serves no metrics (metrics.port=0) never waits, whatever linger_s
    run = tmp_path / "run"
    assert cli.main(["train", "--local", TINY, f"run.dir={run}", "metrics.port=0",
                     "metrics.linger_s=600", *FAST]) == 0
    assert "final scores stay served" not in capsys.readouterr().out
    assert (run / "report.json").exists()


def test_a_stop_ends_the_wait_as_done() -> None:
    waited: list[float] = []

    def interrupted(seconds: float) -> None:  # Ctrl-C, or SIGTERM (Terminated) as the CLI takes it
        waited.append(seconds)
        raise KeyboardInterrupt

    assert not linger(30.0, "here", sleep=interrupted)
    assert waited == [30.0]
    assert linger(2.5, "here", sleep=waited.append)
    assert waited == [30.0, 2.5]


def test_linger_s_is_checked_and_the_tiny_recipes_do_not_wait() -> None:
    assert load_config([]).metrics.linger_s == 30.0
    for value in ("-1", "nan", "inf"):
        with pytest.raises(ConfigError, match=r"^metrics\.linger_s: "):
            load_config([], [f"metrics.linger_s={value}"])
    for recipe in sorted((ROOT / "jobs").glob("*tiny*.yaml")):
        assert load_config([recipe]).metrics.linger_s == 0, recipe.name
