"""One ``python -m dbparallel train`` run of a checkout, in a subprocess, with its peak memory.

``-m dbparallel.cli`` does nothing (no main guard). The run uses this venv, its checkout as
working directory and first on PYTHONPATH (``check_import``: the driver and a Ray actor
started so import that checkout), and a fresh ``DBPARALLEL_CACHE`` beside its run directory.

Peak memory: every 0.2 s the PSS (RSS where unreadable) of the CLI process and all its
descendants is summed; the maximum is kept. Checked here (Ray 2.60): a private instance's
gcs_server, raylet, dashboard, log monitor and autoscaler monitor are children of the driver,
workers and actors children of the raylet: the walk sees all 12 processes. Every 2 s the
sampler also looks for processes with the run's tag in their environment outside the tree
(``untracked_processes``, added to the sum): none so far.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

try:
    import psutil
except ImportError:  # not installed on its own: use the copy Ray vendors (and imports)
    import importlib.util

    sys.path.append(str(Path(importlib.util.find_spec("ray").origin).parent / "thirdparty_files"))
    import psutil

TAG = "DBPARALLEL_DATA_SCALE_TAG"  # the environment variable that marks a run's processes


def pss(p: psutil.Process) -> int:
    """Proportional set size of ``p`` (RSS where PSS is unreadable; 0 once it is gone)."""
    try:
        try:
            return p.memory_full_info().pss
        except psutil.AccessDenied:
            return p.memory_info().rss
    except psutil.Error:
        return 0


class PeakMemory:
    """The maximum over time of the summed PSS of process ``pid`` and all its descendants."""

    def __init__(self, pid: int, tag: str, interval_s: float = 0.2):
        self.root, self.tag, self.interval_s = psutil.Process(pid), tag, interval_s
        self.peak, self.most_processes = 0, 0
        self.untracked: dict[int, psutil.Process] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _tagged(self, p: psutil.Process) -> bool:
        try:
            return p.environ().get(TAG) == self.tag
        except (psutil.Error, OSError):
            return False

    def tree(self) -> list[psutil.Process]:
        """The root's descendants now (none once it has ended)."""
        try:
            return self.root.children(recursive=True)
        except psutil.Error:
            return []

    def _loop(self) -> None:
        samples = 0
        while not self._stop.wait(self.interval_s if samples else 0):
            if not self.root.is_running():
                return
            procs = [self.root, *self.tree()]
            if samples % 10 == 0:  # anything of this run's outside the tree?
                tree = {p.pid for p in procs}
                self.untracked |= {p.pid: p for p in psutil.process_iter()
                                   if p.pid not in tree and self._tagged(p)}
            self.peak = max(self.peak, sum(map(pss, [*procs, *self.untracked.values()])))
            self.most_processes = max(self.most_processes, len(procs))
            samples += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def child_env(checkout: Path, cache: Path, tag: str) -> dict[str, str]:
    """The environment of a CLI run of ``checkout`` (RAY_AUTH_MODE as inherited)."""
    path = os.pathsep.join(filter(None, [str(checkout), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "RAY_USAGE_STATS_ENABLED": "0",
            "DBPARALLEL_CACHE": str(cache), TAG: tag}


def check_import(checkout: Path) -> str:
    """The file ``import dbparallel`` resolves to in a run of ``checkout``; it must be there."""
    env = child_env(checkout, Path(tempfile.gettempdir()), "check")
    done = subprocess.run([sys.executable, "-c", "import dbparallel; print(dbparallel.__file__)"],
                          cwd=checkout, env=env, capture_output=True, text=True)
    if done.returncode:
        return f"import failed: {done.stderr.strip()[-300:]}"  # its runs will fail and say so
    where = done.stdout.strip()
    if not Path(where).resolve().is_relative_to(checkout.resolve()):
        raise SystemExit(f"data_scale: a run of {checkout} imports {where}")
    return where


def train(checkout: Path, args: list[str], run_dir: Path, timeout_s: float) -> dict[str, Any]:
    """``dbparallel train ARGS`` in ``checkout``, writing to ``run_dir`` (its log beside it,
    kept; the run directory and the cache removed after): wall times, peak memory, the
    report's mean samples/s per block, the command. A failed run raises RuntimeError with the
    end of its log."""
    cache, tag = run_dir.with_name(f"{run_dir.name}-cache"), uuid.uuid4().hex
    cmd = [sys.executable, "-m", "dbparallel", "train", *args]
    start = time.perf_counter()
    with open(run_dir.with_name(f"{run_dir.name}.log"), "w+") as log:
        proc = subprocess.Popen(cmd, cwd=checkout, env=child_env(checkout, cache, tag),
                                stdout=log, stderr=subprocess.STDOUT)
        meter = PeakMemory(proc.pid, tag)
        try:
            rc: int | str = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            for p in [*meter.tree(), meter.root]:
                try:
                    p.kill()  # this run's own processes, by pid
                except psutil.Error:
                    pass
            rc = f"timed out after {timeout_s:g} s"
        meter.stop()
        log.seek(0)
        tail = log.read()[-1500:]
    if rc != 0 or not (run_dir / "report.json").is_file():
        raise RuntimeError(f"exit {rc}: {tail}")
    report = json.loads((run_dir / "report.json").read_text())
    rates = [b["samples_per_second"] for b in report["per_block"] if "samples_per_second" in b]
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    return {"wall_time_s": report["wall_time_s"],
            "process_wall_s": time.perf_counter() - start, "peak_memory_bytes": meter.peak,
            "processes": meter.most_processes, "untracked_processes": len(meter.untracked),
            "report_samples_per_s": sum(rates) / len(rates) if rates else None,
            "command": f"cd {checkout} && PYTHONPATH={checkout} {shlex.join(cmd)}"}
