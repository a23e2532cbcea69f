"""A Ray run's final assembly, made by its assembler actor, as ``status`` and ``stop`` see it:
the driver records itself in ``assembling.json`` (training/assembling.py) as a ``--local``
process does, and ``stop`` signals it once for its blocks' leases and its assembly."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import dbparallel
from dbparallel import cli
from dbparallel.training.assembling import ASSEMBLING_FILE

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "jobs" / "tiny_cpu.yaml"
HANG_S = 300  # a hang guard only, never a timing claim


@pytest.mark.slow  # 30 s; the mechanism: test_status_assembly.py, test_stop_assembly.py
def test_a_ray_run_being_assembled_is_shown_and_stopped(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    proc = subprocess.Popen(  # trained in a moment; its samples' million steps take long
        [sys.executable, "-m", "dbparallel", "train", str(RECIPE), f"run.dir={run}",
         "metrics.port=0", "train.steps=2", "train.warmup_steps=0", "sample.steps=1000000"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + HANG_S
        while not (run / ASSEMBLING_FILE).exists() and proc.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        assert (run / ASSEMBLING_FILE).exists(), proc.poll()
        status = dbparallel.status(run)
        code = cli.main(["stop", str(run), "--wait", str(HANG_S)])
        out = capsys.readouterr().out.splitlines()
        _, err = proc.communicate(timeout=HANG_S)
    finally:
        proc.kill()
        proc.wait()
    host = socket.gethostname()
    assert (status.state, status.assembler, status.assembler_driver, status.assembler_alive) \
        == ("being assembled", f"{host}/{proc.pid}", True, True)
    assert code == 0, (out, err[-3000:])
    assert out[0] == (f"blocks 0, 1 and the run's assembly: the Ray run whose driver is pid "
                      f"{proc.pid} on {host} trains and assembles them: SIGTERM sent to the "
                      f"driver")
    assert out[-1] == "the same train command resumes the run"
    assert proc.returncode == 143, err[-3000:]
    assert not (run / ASSEMBLING_FILE).exists() and not (run / "report.json").exists()
    for b in (0, 1):
        lease = json.loads((run / "blocks" / f"block_{b}" / "lease.json").read_text())
        assert lease["holder"] == "" and lease["ended"]
    assert dbparallel.status(run).state == "trained, not yet assembled"
