"""Shared fixtures: tiny configs, and one small local Ray instance for the whole session."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory: pytest.TempPathFactory):
    # Data and classifier caches go to one temp dir per test session, never to the user's
    # home: set before any module-scoped fixture builds a data set.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DBPARALLEL_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        yield


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    # the same folder for every test, whatever a test before it set
    cache = tmp_path_factory.getbasetemp() / "cache"
    monkeypatch.setenv("DBPARALLEL_CACHE", str(cache))


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    # Torch in a test process works with one thread, as a block trainer does by default
    # (runtime.torch_threads): the suite runs one process per core, and a torch pass that
    # hands work to a second thread on a core that another process keeps busy waits for it.
    # A test that needs more threads sets them and puts back what it found.
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seeded_global_rng() -> None:
    # Inputs a test draws from torch's global generator are the same whatever ran before it,
    # so a tolerance that holds alone also holds in the full suite, in any order.
    import torch

    torch.manual_seed(0)


@pytest.fixture
def tiny_overrides(tmp_path: Path) -> list[str]:
    return [f"run.dir={tmp_path / 'run'}"]


@pytest.fixture
def tiny_cfg(tmp_path: Path):
    from dbparallel.config import load_config

    return load_config([ROOT / "jobs" / "tiny_cpu.yaml"], [f"run.dir={tmp_path / 'run'}"])


@pytest.fixture
def s3_server():
    """A real S3-compatible server (moto) on localhost, for run directories in a bucket."""
    server_mod = pytest.importorskip("moto.server", reason="moto[server] is in the test extra")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def bucket(s3_server, monkeypatch):
    """``key`` -> the URI of ``s3://runs/KEY`` on ``s3_server`` (credentials in the
    environment, which the processes a test starts inherit)."""
    import pyarrow.fs as pafs

    host, port = s3_server.get_host_and_port()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    query = f"endpoint_override={host}:{port}&scheme=http&region=us-east-1"
    pafs.S3FileSystem(endpoint_override=f"{host}:{port}", scheme="http", region="us-east-1",
                      allow_bucket_creation=True).create_dir("runs")
    return lambda key: f"s3://runs/{key}?{query}"


@pytest.fixture(scope="session")
def ray_session():
    """A private local Ray instance: 2 CPUs, metrics exported on a free port, and a dashboard
    that serves the state API Ray Train asks (as ``connect`` starts one for replicas)."""
    import socket

    import ray

    from dbparallel.runtime.ray_connect import state_api_here

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with state_api_here() as dashboard:
        ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_port=dashboard,
                 object_store_memory=256 * 2**20, logging_level="ERROR", log_to_driver=False,
                 _metrics_export_port=port,
                 _system_config={"metrics_report_interval_ms": 1000})
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield {"metrics_port": port}
    ray.shutdown()


@pytest.fixture
def not_joined(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process reads as one that joined no Ray instance, as a fresh program does: the
    session's instance may be up in it (the tests that join it run in one xdist process, with
    other modules' tests), and dbparallel.encode and reshard then run as Ray tasks on it."""
    import sys

    ray = sys.modules.get("ray")  # not imported here: where no test imported it, none joined
    if ray is not None:
        monkeypatch.setattr(ray, "is_initialized", lambda: False)


RAY_GROUP = "ray_session"  # the work unit of the tests that join the session's Ray instance


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # before xdist's scheduler; -p no:xdist works
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    # Under pytest-xdist (`make test`: `-n auto --dist loadgroup`), a module's tests run in one
    # process, so its module-scoped fixtures are built once, and the tests that join the
    # session's Ray instance run in one process, which starts it once (``work_unit``); a test
    # of such a module that does not join it runs with its module's others, beside them.
    # Tests that start Ray instances of their own do so in child processes, on free ports.
    # xdist's own loadgroup reads xdist_group marks through node ids that pytest 9.2 no longer
    # lets it rewrite (and reads them before a conftest could add any): it would spread every
    # module's tests over the processes.
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(config.rootpath, nodeid)

    return ModuleScheduling(config, log)


def work_unit(root: Path, nodeid: str) -> str:
    """The tests that run in one process with the test ``nodeid`` (of the project in
    ``root``): RAY_GROUP for a test that joins the session's Ray instance, else its
    module."""
    module, _, test = nodeid.partition("::")
    return RAY_GROUP if _joins_ray(root / module, test.split("[", 1)[0]) else module


@cache
def _joins_ray(module: Path, test: str) -> bool:
    """Whether the test ``test`` (its function's name) of the module ``module`` asks for the
    session's Ray instance: ray_session is its argument, or that of a fixture of the module
    it asks for (or of theirs, or of an autouse one). Where that cannot be read from the
    module's source (a test in a class, usefixtures, getfixturevalue): whether the module
    names ray_session at all."""
    try:
        source = module.read_text()
    except OSError:  # no module file (a doctest of a package, say): a work unit of its own
        return False
    if "ray_session" not in source:
        return False
    if "usefixtures" in source or "getfixturevalue" in source:
        return True
    import ast

    fixtures: dict[str, list[str]] = {}  # the module's fixtures and their arguments
    autouse: list[str] = []
    tests: dict[str, list[str]] = {}
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = [a.arg for a in (*node.args.posonlyargs, *node.args.args,
                                    *node.args.kwonlyargs)]
            marks = [ast.unparse(d) for d in node.decorator_list]
            if any(m.startswith(("pytest.fixture", "fixture")) for m in marks):
                fixtures[node.name] = args
                autouse += [node.name] if any("autouse=True" in m for m in marks) else []
            else:
                tests[node.name] = args
    if test not in tests:  # not a function of the module: a class's test, say
        return True
    needed: set[str] = set()
    todo = [*tests[test], *autouse]
    while todo:
        name = todo.pop()
        if name not in needed:
            needed.add(name)
            todo.extend(fixtures.get(name, ()))
    return "ray_session" in needed
