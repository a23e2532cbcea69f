"""benchmarks/gpu_speed.py on the CPU: its rows (gpu_case.py), fail-soft matrix, plot and table.

No timing is asserted: the numbers are the GPU's to give; here only their shape and the
invariants between them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import gpu_case, gpu_speed  # noqa: E402
from benchmarks.gpu_case import SMOKE, Spec  # noqa: E402


def test_matrix_covers_models_scopes_precisions_and_compile() -> None:
    specs = gpu_speed.matrix()
    default = [s for s in specs if s.kind == "train" and s.mode == "default"]
    train = {(s.model, s.scope, s.precision, s.compiled) for s in default}
    assert len(train) == 2 * 2 * 2 * 2 == len(default)
    others = {(s.model, s.scope, s.precision, s.compiled, s.mode) for s in specs
              if s.mode != "default"}
    assert others == {(m, "block", "bf16", True, mode) for mode in gpu_speed.OTHER_MODES
                      for m in ("dit-s", "dit-b")}
    assert len({s.name for s in specs}) == len(specs)
    assert {(s.model, s.compiled) for s in specs if s.kind == "sample"} == {
        (m, c) for m in ("dit-s", "dit-b") for c in (False, True)}
    # first what the MFU targets need: each model's bf16 block eager, then compiled
    assert [(s.model, s.scope, s.precision, s.compiled, s.mode) for s in specs[:4]] == [
        (m, "block", "bf16", c, "default") for c in (False, True) for m in ("dit-s", "dit-b")]
    assert specs[-2:] == [s for s in specs if s.mode == "max-autotune-no-cudagraphs"]  # last


def test_training_row_on_cpu() -> None:
    row = gpu_case.measure(Spec("train", "tiny", "block", "tf32", False), SMOKE)
    assert row["device"] == "cpu" and row["layers"] == 2 and row["timed_steps"] == 2
    assert row["samples_per_s"] == pytest.approx(SMOKE.batch / row["step_time_s"])
    assert row["achieved_tflops"] == pytest.approx(
        row["model_flops_per_step"] / row["step_time_s"] / 1e12)
    assert row["mfu"] is None and row["peak_allocated_bytes"] is None  # the CPU
    assert row["compile_step_s"] is None
    assert row["peak_reserved_bytes"] is None and row["outside_allocator_bytes"] is None
    from dbparallel.training.plan import step_bytes  # the plan of the step it timed

    cfg = gpu_case.config(Spec("train", "tiny", "block", "tf32", False), SMOKE)
    assert row["plan_bytes"] == step_bytes(cfg, 0)["total"] > 0
    e2e = gpu_case.measure(Spec("train", "tiny", "e2e", "bf16", False), SMOKE)
    assert e2e["layers"] == 6 and e2e["model_flops_per_step"] > row["model_flops_per_step"]


def test_sampling_row_on_cpu() -> None:
    row = gpu_case.measure(Spec("sample", "tiny", "blocks", "tf32", False), SMOKE)
    assert row["images"] == SMOKE.sample_images and row["images_per_s"] > 0


def test_a_failing_configuration_loses_only_its_row(tmp_path: Path) -> None:
    specs = [Spec("train", "m", "block", "tf32", False), Spec("train", "m", "e2e", "tf32", False),
             Spec("sample", "m", "blocks", "tf32", True)]

    def runner(spec: Spec, limit_s: float) -> dict:
        assert limit_s == gpu_speed.LIMIT_S["compiled" if spec.compiled else "eager"]
        if spec.scope == "e2e":
            raise RuntimeError("CUDA out of memory")
        return {"samples_per_s": 1.0}

    out = tmp_path / "r.json"
    result = gpu_speed.run_matrix(specs, runner, 600, out, {"device": "x", "torch": "t"})
    rows = json.loads(out.read_text())["rows"]
    assert rows == result["rows"] and [r["name"] for r in rows] == [s.name for s in specs]
    assert rows[1]["error"] == "RuntimeError: CUDA out of memory"
    assert rows[0]["samples_per_s"] == rows[2]["samples_per_s"] == 1.0


def test_configurations_past_the_budget_are_skipped(tmp_path: Path) -> None:
    specs = gpu_speed.matrix(("m",))
    result = gpu_speed.run_matrix(specs, lambda spec, limit: {}, 0, tmp_path / "r.json",
                                  {"device": "x", "torch": "t"})
    assert all("skipped" in r for r in result["rows"]) and len(result["rows"]) == len(specs)


def test_a_compile_the_budget_cannot_hold_is_skipped_and_a_later_eager_row_runs(
        tmp_path: Path) -> None:
    specs = [Spec("train", "m", "block", "bf16", True), Spec("train", "m", "block", "bf16", False)]
    budget = (gpu_speed.MIN_START_S["eager"] + gpu_speed.MIN_START_S["compiled"]) / 2
    ran = []
    result = gpu_speed.run_matrix(specs, lambda spec, limit: ran.append(spec) or {}, budget,
                                  tmp_path / "r.json", {"device": "x", "torch": "t"})
    assert "skipped" in result["rows"][0] and "skipped" not in result["rows"][1]
    assert ran == [specs[1]]


def test_cuda_graphs_get_a_compile_s_time_and_autotuning_more(tmp_path: Path) -> None:
    # a budget that holds a compile but not an autotuning: the CUDA-graph row runs
    specs = [s for s in gpu_speed.matrix(("m",)) if s.mode != "default"]
    assert [s.mode for s in specs] == list(gpu_speed.OTHER_MODES)
    limits = {}
    result = gpu_speed.run_matrix(specs, lambda spec, limit: limits.update({spec.mode: limit})
                                  or {}, gpu_speed.MIN_START_S["compiled"] + 1,
                                  tmp_path / "r.json", {"device": "x", "torch": "t"})
    assert "skipped" in result["rows"][1] and "skipped" not in result["rows"][0]
    assert list(limits) == ["reduce-overhead"]
    assert limits["reduce-overhead"] <= gpu_speed.LIMIT_S["compiled"]


def test_a_timed_out_configuration_keeps_its_last_lines(tmp_path: Path, monkeypatch) -> None:
    def hang(cmd, **kwargs):
        raise subprocess.TimeoutExpired(cmd, kwargs["timeout"], output=b"",
                                        stderr=b"compiling\nrecording a CUDA graph\n")

    monkeypatch.setattr(gpu_speed.subprocess, "run", hang)
    row = gpu_speed.subprocess_runner(True)(Spec("train", "m", "block", "bf16", True), 5.0)
    assert row == {"error": "timed out after 5 s: compiling | recording a CUDA graph"}


def test_plot_of_rows_with_failures(tmp_path: Path) -> None:
    rows = [{"name": "a", "kind": "train", "samples_per_s": 10.0, "mfu": 0.4},
            {"name": "b", "kind": "train", "samples_per_s": 5.0, "mfu": None},
            {"name": "c", "kind": "sample", "images_per_s": 3.0},
            {"name": "d", "kind": "train", "error": "exit 1"}]
    gpu_speed.plot({"device": "x", "torch": "t", "rows": rows}, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 0


def test_markdown_table_of_a_result() -> None:
    from benchmarks.gpu_report import markdown

    rows = [{"name": "s/train/block/bf16/compiled", "kind": "train", "step_time_s": 0.0125,
             "samples_per_s": 10240.0, "peak_allocated_bytes": 3 << 30, "plan_bytes": 4 << 30,
             "achieved_tflops": 395.76, "mfu": 0.4},
            {"name": "s/train/e2e/tf32/eager", "kind": "train", "error": "exit 1: OOM | x"},
            {"name": "s/train/e2e/bf16/eager", "kind": "train", "skipped": "budget"},
            {"name": "s/sample/blocks/tf32/eager", "kind": "sample", "images_per_s": 214.04}]
    text = markdown({"device": "NVIDIA H200", "torch": "2.11", "cuda": "13.0", "rows": rows})
    lines = text.splitlines()
    assert lines[0] == "NVIDIA H200, torch 2.11, CUDA 13.0"
    assert "| s/train/block/bf16/compiled | 12.50 ms | 10,240 | 3,072 MiB | 4,096 MiB | " \
           "395.8 | 40.0% |" in lines
    assert "| s/train/e2e/tf32/eager | failed: exit 1: OOM / x | | | | | |" in lines
    assert "| s/train/e2e/bf16/eager | skipped | | | | | |" in lines
    assert lines[-1] == "| s/sample/blocks/tf32/eager | 214.0 |"


@pytest.mark.slow
def test_smoke_run_end_to_end(tmp_path: Path) -> None:
    # every configuration in its own process, compiled ones too (minutes on 2 cores)
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_speed.py"), "--smoke",
                    "--out", str(tmp_path)], check=True, timeout=900)
    result = json.loads((tmp_path / "gpu_speed_cpu-smoke.json").read_text())
    assert len(result["rows"]) == len(gpu_speed.matrix(("tiny",)))
    assert not [r for r in result["rows"] if "error" in r or "skipped" in r]
    assert (tmp_path / "gpu_speed_cpu-smoke.png").is_file()
