"""benchmarks/gpu.sh on a machine without a GPU: it stops at once when a package it needs is
missing or torch sees no CUDA device (no device time spent), and otherwise, told to run on a
CPU, runs its parts (the GPU tests skip here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _gpu_sh(tmp_path: Path, blocked: tuple[str, ...],
            without_cuda: bool = True) -> subprocess.CompletedProcess:
    """``bash benchmarks/gpu.sh tests`` with this venv's python3 first on PATH, ``blocked``
    packages made unimportable, no wheels to install, results into ``tmp_path/out``; with
    ``without_cuda``, its parts run on this machine's CPU."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in blocked))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "PYTHONPATH": str(site), "WHEELS": str(tmp_path / "no-wheels"),
           "OUT": str(tmp_path / "out"), "GPU_SH_WITHOUT_CUDA": "1" if without_cuda else ""}
    return subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "tests"], env=env,
                          capture_output=True, text=True, timeout=600)


def test_a_missing_package_stops_gpu_sh_before_any_part(tmp_path: Path) -> None:
    done = _gpu_sh(tmp_path, ("omegaconf",))
    assert done.returncode == 2
    assert "gpu_env.sh: omegaconf missing here" in done.stderr
    assert "benchmarks/gpu_wheels.sh" in done.stderr
    assert not (tmp_path / "out" / "gpu_device.txt").exists()  # stopped before nvidia-smi
    assert "== tests" not in done.stdout


def test_without_a_cuda_device_gpu_sh_stops_before_any_part(tmp_path: Path) -> None:
    done = _gpu_sh(tmp_path, (), without_cuda=False)
    assert done.returncode == 2
    assert "sees no CUDA device here" in done.stderr and "torch 2." in done.stderr
    assert "== tests" not in done.stdout


def test_with_every_package_gpu_sh_runs_its_parts(tmp_path: Path) -> None:
    done = _gpu_sh(tmp_path, ())
    assert "== tests" in done.stdout, done.stderr
    log = (tmp_path / "out" / "gpu_tests.log").read_text()
    assert "skipped" in log and "failed" not in log  # no CUDA device here: every test skips
