"""What the CPU benchmarks share: the command line, the machine record, results and plots.

Each benchmark is a plain function returning ``{"rows": [...], ...}``; ``finish`` prints it
(as a table or, with ``--json``, as JSON), writes ``benchmarks/results/<name>.json`` and a plot.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from benchmarks.provenance import provenance

RESULTS = Path(__file__).resolve().parent / "results"
IDLE_LOAD = 1.0  # a 1-minute load average below this counts as an idle machine


def parser(description: str, timed: bool = False) -> argparse.ArgumentParser:
    """The options every benchmark takes (``timed``: also --wait-idle)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--quick", action="store_true",
                   help="a reduced setting that checks the script (a minute or two on 2 idle "
                        "cores; the Ray benchmarks' numbers are then mostly start-up)")
    p.add_argument("--out", default="", help="results directory (default benchmarks/results)")
    p.add_argument("--no-plot", action="store_true", help="write no plot")
    if timed:
        p.add_argument("--wait-idle", type=float, default=0.0, metavar="MINUTES",
                       help=f"first wait up to this long for a load average below {IDLE_LOAD}")
    return p


def settle(args: argparse.Namespace, name: str) -> None:
    """Honour --wait-idle; measure anyway if the machine never gets idle (the load average
    goes into the result)."""
    log = lambda message: print(message, file=sys.stderr)  # noqa: E731 (stdout is the JSON)
    if args.wait_idle and not wait_for_idle(args.wait_idle, log=log):
        log(f"{name}: no idle machine within {args.wait_idle:g} min; measuring under load")


def machine() -> dict[str, Any]:
    """Where a number was measured: timings are meaningless without it."""
    return {"platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "cpus": os.cpu_count(),
            "load_average": list(os.getloadavg())}


@contextlib.contextmanager
def s3_server(bucket: str) -> Iterator[tuple[str, int]]:
    """An S3-compatible server (moto) on this machine, holding the empty ``bucket``: its
    (host, port), for a benchmark of reads or writes in an object store."""
    import logging

    import pyarrow.fs as pafs
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        pafs.S3FileSystem(endpoint_override=f"{host}:{port}", scheme="http",
                          region="us-east-1", allow_bucket_creation=True).create_dir(bucket)
        yield host, port
    finally:
        server.stop()


def load_average() -> float:
    """The 1-minute load average."""
    return os.getloadavg()[0]


def wait_for_idle(max_minutes: float, poll_s: float = 60.0,
                  log: Callable[[str], None] = print) -> bool:
    """Poll until the 1-minute load average is below IDLE_LOAD; False if it never was.

    Other jobs on the machine steal cores from the timed ones, so a timing taken under load
    understates both the throughput and the scaling of concurrent actors."""
    deadline = time.monotonic() + max_minutes * 60
    while True:
        load = load_average()
        if load < IDLE_LOAD:
            return True
        if time.monotonic() >= deadline:
            return False
        log(f"load average {load:.2f} >= {IDLE_LOAD}: waiting for an idle machine")
        time.sleep(poll_s)


def finish(name: str, result: dict[str, Any], args: argparse.Namespace,
           table: Callable[[dict[str, Any]], str],
           plot: Callable[[dict[str, Any], Path], None]) -> None:
    """Print ``result``, write ``<name>.json`` and ``<name>.png`` into the results directory."""
    out = Path(args.out) if args.out else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    result.setdefault("provenance", provenance())  # the commit measured, and when
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(table(result))
    if args.no_plot:
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError:
        print(f"{name}: no plot (pip install matplotlib)", file=sys.stderr)
        return
    plot(result, out / f"{name}.png")


class ReadMemory:
    """From its creation on: Arrow's peak (a fresh pool made Arrow's default) and what the
    process's resident memory grew by at its peak (Linux: VmHWM, reset here, less VmRSS)."""

    _pools: list[Any] = []  # Arrow's default pool must outlive every buffer it allocated

    def __init__(self) -> None:
        import pyarrow as pa

        self.pool = pa.proxy_memory_pool(pa.system_memory_pool())
        ReadMemory._pools.append(self.pool)
        pa.set_memory_pool(self.pool)
        Path("/proc/self/clear_refs").write_text("5")  # the peak RSS starts again here
        self.before = _proc_status("VmRSS")

    def result(self) -> dict[str, int]:
        return {"arrow_peak_bytes": self.pool.max_memory(),
                "process_peak_bytes": _proc_status("VmHWM") - self.before}


def _proc_status(key: str) -> int:
    """Bytes of ``key`` (VmRSS: resident now, VmHWM: its peak) in /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def fresh_runs(script: str, args: list[str], repeats: int) -> list[dict[str, Any]]:
    """``repeats`` runs of ``python script --one *args``, each in a new process, each printing
    one JSON object."""
    import subprocess

    return [json.loads(subprocess.run([sys.executable, script, "--one", *args], check=True,
                                      capture_output=True, text=True).stdout)
            for _ in range(repeats)]


def mib(n: float) -> str:
    return f"{n / 2**20:,.1f}"


def quality_table(result: dict[str, Any], task_width: int = 5, metric_width: int = 16,
                  value_width: int = 10) -> str:
    """The rows of a quality benchmark (task, method with its variant and seed if any,
    blocks, metric, value, layer-steps, wall time) as a text table."""
    t, m, v = task_width, metric_width, value_width
    lines = [f"{'task':<{t}} {'method':<28} {'B':>2} {'metric':<{m}} {'value':>{v}} "
             f"{'layer-steps':>12} {'wall s':>8}"]
    for r in result["rows"]:
        method = r["method"] + (f" {r['variant']}" if r.get("variant") else "") \
            + (f" s{r['seed']}" if r.get("seed") else "")
        lines.append(f"{r['task']:<{t}} {method:<28} {r['blocks']:>2} {r['metric']:<{m}} "
                     f"{r['value']:>{v}.4g} {r['train_layer_steps']:>12,} "
                     f"{r['wall_time_s']:>8.0f}")
    return "\n".join(lines)
