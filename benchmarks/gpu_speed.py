"""GPU speed of training and sampling: precision (tf32, bf16) x torch.compile, with MFU.

DiT-S/2 and DiT-B/2 on 32x32x3 images, depth 12, batch 128, synthetic inputs, Ray-free layers
only (BlockTrainer is what a block actor runs; no Ray, no omegaconf):
  - training, one block of B=3 (4 layers, its stem and head) and the whole network end to end,
    each at train.precision tf32 and bf16, eager and with train.compile: step time, samples/s,
    CUDA allocator peak, model FLOPs per step (training/flops.py), achieved TFLOP/s, MFU
    against the device's dense peak (training/peaks.py), and the compiling step's time;
  - the bf16 block compiled in torch.compile's other modes (train.compile_mode): CUDA graphs
    (reduce-overhead) and tuned kernels (max-autotune-no-cudagraphs), to choose the default;
  - sampling, the B=3 blocks composed (50 Euler steps with guidance), eager and with each
    block's forward compiled: images/s.
Every configuration runs in its own process under a time limit, so one that fails or hangs
loses only its own row (``error``); those not started before ``--budget-s`` runs out are
listed as ``skipped``; ``matrix`` orders them by what a short session needs first. Rows go to
``<out>/gpu_speed_<device>.json`` after each configuration, and a plot to the same name .png.
One configuration and its measurement: gpu_case.py; the plot and the docs' tables: gpu_report.py.

    python benchmarks/gpu_speed.py --out benchmarks/results    # CUDA: about 6 minutes
    python benchmarks/gpu_speed.py --smoke --out /tmp/smoke    # tiny model, CPU, 2 steps
    python benchmarks/gpu_speed.py --plot benchmarks/results/gpu_speed_nvidia-h200.json
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.gpu_case import BLOCKS, SMOKE, Setting, Spec, measure  # noqa: E402
from benchmarks.gpu_report import markdown, plot  # noqa: E402
from benchmarks.provenance import provenance  # noqa: E402

MODELS = ("dit-s", "dit-b")
# seconds a configuration may take (compiling a DiT step takes tens of seconds)
# tuned: the max-autotune modes, which time kernel choices; CUDA graphs (reduce-overhead)
# compile as the default mode does, and record each graph once
LIMIT_S = {"eager": 90.0, "compiled": 180.0, "tuned": 300.0}
OTHER_MODES = ("reduce-overhead", "max-autotune-no-cudagraphs")  # beside torch's default
# a configuration with less budget left than this is skipped (a later one may still fit):
# a compile started with less would be cut before it measures anything
MIN_START_S = {"eager": 30.0, "compiled": 90.0, "tuned": 150.0}


def matrix(models: tuple[str, ...] = MODELS) -> list[Spec]:
    """Every configuration, in the order a short device session needs them (a budget that
    runs out skips the last): the bf16 blocks eager and compiled (the MFU targets), the tf32
    blocks eager, the bf16 blocks with CUDA graphs (reduce-overhead: the compile mode to
    choose), the network end to end and sampling eager; then the other compiled rows; last,
    tuned kernels (max-autotune-no-cudagraphs), whose autotuning takes longest."""
    def train(scope: str, precision: str, compiled: bool, mode: str = "default") -> list[Spec]:
        return [Spec("train", m, scope, precision, compiled, mode) for m in models]

    def sample(compiled: bool) -> list[Spec]:
        return [Spec("sample", m, "blocks", "tf32", compiled) for m in models]

    return [*train("block", "bf16", False), *train("block", "bf16", True),
            *train("block", "tf32", False), *train("block", "bf16", True, OTHER_MODES[0]),
            *train("e2e", "bf16", False), *train("e2e", "tf32", False), *sample(False),
            *train("block", "tf32", True), *train("e2e", "bf16", True),
            *train("e2e", "tf32", True), *sample(True),
            *train("block", "bf16", True, OTHER_MODES[1])]


# ---------------------------------------------------------------------------- the matrix
Runner = Callable[[Spec, float], dict[str, Any]]


def subprocess_runner(smoke: bool) -> Runner:
    """Runs one configuration in a fresh process; a failure or a time-out becomes its row."""
    def run(spec: Spec, limit_s: float) -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "row.json"
            cmd = [sys.executable, __file__, "--worker", json.dumps(asdict(spec)),
                   "--row-out", str(out), *(["--smoke"] if smoke else [])]
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=limit_s)
            except subprocess.TimeoutExpired as err:  # its last lines tell a hang from slowness
                said = err.stderr or err.stdout or b""
                said = said.decode(errors="replace") if isinstance(said, bytes) else said
                tail = said.strip().splitlines()[-8:]
                return {"error": f"timed out after {limit_s:.0f} s" +
                        (": " + " | ".join(tail) if tail else "")}
            if done.returncode or not out.exists():
                tail = (done.stderr or done.stdout).strip().splitlines()[-8:]
                return {"error": f"exit {done.returncode}: " + " | ".join(tail)}
            return json.loads(out.read_text())
    return run


def run_matrix(specs: list[Spec], runner: Runner, budget_s: float, out: Path,
               head: dict[str, Any]) -> dict[str, Any]:
    """Every spec through ``runner`` until the budget runs out; the JSON is rewritten after
    every row, so what finished survives whatever comes after."""
    result = {**head, "budget_s": budget_s, "provenance": provenance(), "rows": []}
    deadline = time.monotonic() + budget_s
    for spec in specs:
        left = deadline - time.monotonic()
        base = {"name": spec.name, **asdict(spec)}
        if left < MIN_START_S[_mode(spec)]:
            row = {**base, "skipped": f"time budget (--budget-s {budget_s:g}) spent"}
        else:
            start = time.monotonic()
            try:
                row = {**base, **runner(spec, min(LIMIT_S[_mode(spec)], left))}
            except Exception as err:  # a broken runner must not lose the other rows
                row = {**base, "error": f"{type(err).__name__}: {err}"}
            row["wall_s"] = time.monotonic() - start
        result["rows"].append(row)
        print(_line(row), flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def _mode(spec: Spec) -> str:
    if spec.compiled and "autotune" in spec.mode:
        return "tuned"  # autotuning kernels takes longer than compiling them
    return "compiled" if spec.compiled else "eager"


def _line(row: dict[str, Any]) -> str:
    name = f"{row['name']:<52}"
    if "error" in row or "skipped" in row:
        return f"{name} {'FAILED: ' + row['error'] if 'error' in row else 'skipped'}"
    if row["kind"] == "sample":
        return f"{name} {row.get('images_per_s', 0):>9.1f} images/s"
    mib = (row.get("peak_allocated_bytes") or 0) / 2**20
    mfu = f"{row['mfu']:.1%}" if row.get("mfu") is not None else "n/a"
    return (f"{name} {row.get('step_time_s', 0) * 1e3:>8.2f} ms "
            f"{row.get('samples_per_s', 0):>8.0f} samples/s {mib:>7.0f} MiB "
            f"{row.get('achieved_tflops') or 0:>7.2f} TFLOP/s MFU {mfu}")


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


def gpu_name() -> str:
    """The first GPU's name from nvidia-smi (the driver process holds no CUDA context)."""
    try:
        text = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown-gpu"
    return text.strip().splitlines()[0] if text.strip() else "unknown-gpu"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="benchmarks/results", help="results directory")
    p.add_argument("--budget-s", type=float, default=330.0, help="time for all configurations")
    p.add_argument("--only", default="", help="comma-separated parts of the names to run")
    p.add_argument("--smoke", action="store_true", help="tiny model on the CPU, 2 steps")
    p.add_argument("--plot", default="", metavar="JSON", help="only draw the plot of a result")
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)
    p.add_argument("--row-out", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    setting = SMOKE if args.smoke else Setting()
    if args.worker:
        row = measure(Spec(**json.loads(args.worker)), setting)
        Path(args.row_out).write_text(json.dumps(row))
        return
    if args.plot:
        plot(json.loads(Path(args.plot).read_text()), Path(args.plot).with_suffix(".png"))
        print(markdown(json.loads(Path(args.plot).read_text())))
        return
    if not args.smoke and not torch.cuda.is_available():
        sys.exit("gpu_speed: no CUDA device (use --smoke to check the script on the CPU)")
    device = "cpu (smoke)" if args.smoke else gpu_name()
    specs = matrix(("tiny",) if args.smoke else MODELS)
    if args.only:
        specs = [s for s in specs if any(part in s.name for part in args.only.split(","))]
    out = Path(args.out) / f"gpu_speed_{slug(device)}.json"
    head = {"device": device, "torch": torch.__version__, "cuda": torch.version.cuda,
            "blocks": BLOCKS, "setting": asdict(setting)}
    result = run_matrix(specs, subprocess_runner(args.smoke), args.budget_s, out, head)
    try:
        plot(result, out.with_suffix(".png"))
    except ImportError:
        print("gpu_speed: matplotlib is not installed; draw later with --plot", file=sys.stderr)
    print(f"results: {out}")


if __name__ == "__main__":
    main()
