"""`make test` runs the suite in several processes (pytest-xdist, tests/conftest.py): each
module's tests in one process, and every test that joins the session's Ray instance in the
same one, so that module fixtures are built once and Ray starts once per suite; a test of such
a module that does not join it runs beside them, in its module's own work unit."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import RAY_GROUP, work_unit

ROOT = Path(__file__).resolve().parents[2]
MODULE = "tests/unit/test_run_id.py"  # a few quick tests


def test_a_module_s_tests_run_in_one_process() -> None:
    pytest.importorskip("xdist", reason="pytest-xdist is in the test extra")
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v",
         "-p", "no:cacheprovider", MODULE],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    ran = re.findall(rf"^\[(gw\d+)\] .*PASSED {re.escape(MODULE)}::", out.stdout, re.M)
    assert out.returncode == 0 and len(ran) > 1, out.stdout[-3000:] + out.stderr[-3000:]
    assert len(set(ran)) == 1, ran  # not spread over the two


def test_the_tests_that_join_the_session_s_ray_share_one_process() -> None:
    # through a module fixture that asks for it, and as an argument
    assert work_unit(ROOT, "tests/ray/test_train_ray.py::test_report_and_files") == RAY_GROUP
    assert work_unit(ROOT, "tests/ray/test_plan_ray.py::test_plan_reads_the_cluster_it_joins") \
        == RAY_GROUP
    assert work_unit(ROOT, "tests/unit/test_benchmarks.py::test_throughput_rows") == RAY_GROUP
    # a test of such a module that does not ask for it (the module's own work unit), and one
    # whose fixtures cannot be read from the source (here no such function): with Ray
    reliability = "tests/ray/test_reliability_ray.py"
    assert work_unit(ROOT, f"{reliability}::test_sigterm_stops_a_ray_run_as_ctrl_c_does"
                     "[driver]") == reliability
    assert work_unit(ROOT, "tests/unit/test_benchmarks.py::test_memory_rows[ar]") == \
        "tests/unit/test_benchmarks.py"
    assert work_unit(ROOT, "tests/unit/test_benchmarks.py::x") == RAY_GROUP
    # a module that starts Ray instances of its own (in child processes), and one without Ray
    assert work_unit(ROOT, "tests/ray/test_auth_ray.py::test_a_client_without_the_token_is_"
                     "refused") == "tests/ray/test_auth_ray.py"
    assert work_unit(ROOT, f"{MODULE}::test_a[x]") == MODULE
