"""dbparallel.train on Ray: the blocks train as actors in the Ray instance this process is
connected to, with the weights local mode gives."""

from __future__ import annotations

from pathlib import Path

import pytest

import dbparallel

pytestmark = pytest.mark.ray
TINY = Path(__file__).resolve().parents[2] / "jobs" / "tiny_cpu.yaml"
HANG_S = 300  # a hang guard only, never a timing claim


@pytest.mark.slow  # train() on Ray is run_ray (test_train_ray); the API by default: test_api
def test_train_from_python_on_ray_matches_local_mode(ray_session, tmp_path) -> None:
    overrides = {"train.steps": 6, "metrics.port": 0}
    on_ray = dbparallel.train(TINY, overrides={**overrides, "run.dir": tmp_path / "ray"},
                              progress=False)
    here = dbparallel.train(TINY, overrides={**overrides, "run.dir": tmp_path / "local"},
                            local=True, progress=False)
    assert [r["steps"] for r in on_ray["per_block"]] == [6, 6]
    assert [r["final_loss"] for r in on_ray["per_block"]] == \
        [r["final_loss"] for r in here["per_block"]]
    assert on_ray["assembly"] == here["assembly"]


def test_relative_paths_are_the_driver_s_on_a_cluster_it_joined(ray_session, tmp_path,
                                                                 monkeypatch) -> None:
    """A cluster's block processes work in their node's working directory (here the one this
    test session started Ray in, as a `ray start` head's is where it ran): a driver's relative
    run.dir and data.path are its own, made absolute before they are handed on. The blocks
    used to write into, and look for the data in, a directory of that name under theirs."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    images = np.random.default_rng(0).integers(0, 256, (200, 64), dtype=np.uint8)
    (tmp_path / "data").mkdir()
    pq.write_table(pa.table({"image": pa.array(list(images), type=pa.list_(pa.uint8())),
                             "label": np.arange(200) % 10}), tmp_path / "data" / "train.parquet")
    monkeypatch.chdir(tmp_path)  # after Ray started elsewhere
    report = dbparallel.train(TINY, overrides={
        "run.dir": "runs/rel", "data.source": "parquet", "data.path": "data",
        "train.steps": 2, "data.validate": False, "metrics.port": 0}, progress=False)
    assert [r["steps"] for r in report["per_block"]] == [2, 2]
    assert dbparallel.status(tmp_path / "runs" / "rel").state == "finished"


# A program that joins Ray itself (ray.init installs its own SIGTERM handler), trains from
# Python and says how the call ended and which handler SIGTERM has after it.
JOINED = """
import json, signal, sys
import ray
import dbparallel

ray.init(address=sys.argv[3], logging_level="ERROR", log_to_driver=False)
rays = signal.getsignal(signal.SIGTERM)
try:
    dbparallel.train(sys.argv[1], overrides={"run.dir": sys.argv[2], "metrics.port": 0,
                     "train.steps": 100000, "train.checkpoint_every": 2,
                     "data.validate": False}, progress=False)
    said = "returned"
except dbparallel.Terminated:
    said = "Terminated"
print(json.dumps({"said": said, "rays_after": signal.getsignal(signal.SIGTERM) is rays}))
ray.shutdown()
"""


def test_sigterm_stops_a_run_of_a_program_that_joined_ray_itself(ray_session, tmp_path,
                                                                 capsys) -> None:
    """``ray.init`` replaces SIGTERM's default with an exit under which Ray's crash handler
    dumps the stack and aborts the process: `dbparallel stop` of a Ray run whose program
    joined Ray first used to raise SystemExit in the call and then abort the program.
    ``train`` takes SIGTERM there as where the default is: it raises Terminated, the
    program goes on, and Ray's handler is back after the call."""
    import json
    import subprocess
    import sys
    import time

    import ray

    from dbparallel import cli

    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", JOINED, str(TINY), str(run),
                             ray.get_runtime_context().gcs_address],
                            cwd=TINY.parents[1], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        manifest = run / "blocks" / "block_0" / "manifest.json"
        deadline = time.monotonic() + HANG_S
        while not manifest.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert manifest.exists(), proc.poll()
        code = cli.main(["stop", str(run), "--wait", str(HANG_S)])
        said = capsys.readouterr().out
        stdout, err = proc.communicate(timeout=HANG_S)
    finally:
        proc.kill()
        proc.wait()
    assert code == 0, said
    assert proc.returncode == 0, err[-3000:]
    assert json.loads(stdout.splitlines()[-1]) == {"said": "Terminated", "rays_after": True}
    blocks = dbparallel.status(run).blocks
    assert [b.state for b in blocks] == ["stopped", "stopped"]
    assert all(json.loads((run / "blocks" / f"block_{b}" / "lease.json").read_text())
               ["holder"] == "" for b in (0, 1))


# A program that trains on a cluster by its address (train joins it, and leaves it after)
# and prints the environment variables the call changed (scikit-learn, which the evaluation
# imports, sets KMP_* as it loads: imported first).
LEFT = """
import json, os, sys
import sklearn
import dbparallel

before = dict(os.environ)
dbparallel.train(sys.argv[1], overrides={"run.dir": sys.argv[2], "runtime.address": sys.argv[3],
                 "metrics.port": 0, "train.steps": 1, "data.validate": False}, progress=False)
print(json.dumps({k: [before.get(k), os.environ.get(k)] for k in before.keys() | os.environ.keys()
                  if before.get(k) != os.environ.get(k)}))
"""


def test_train_leaves_its_program_s_environment_as_it_found_it(ray_session, tmp_path) -> None:
    """Joining Ray sets variables in the driver (``ray.init``: PYTHONBREAKPOINT, which sent the
    program's own ``breakpoint()`` to Ray's debugger once the call had returned; a private
    instance also RAY_AUTH_MODE and RAY_USAGE_STATS_ENABLED): the call that joined puts them
    back as it leaves."""
    import json
    import os
    import subprocess
    import sys

    import ray

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONBREAKPOINT", "RAY_ADDRESS")}
    out = subprocess.run([sys.executable, "-c", LEFT, str(TINY), str(tmp_path / "run"),
                          ray.get_runtime_context().gcs_address], cwd=TINY.parents[1], env=env,
                         capture_output=True, text=True, timeout=HANG_S)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.splitlines()[-1]) == {}


def test_a_second_ctrl_c_during_the_stop_s_cleanup_leaves_no_lease_held(
        ray_session, tmp_path, monkeypatch) -> None:
    """A program that calls ``train`` keeps Python's Ctrl-C: the first stops the run, and a
    second that comes while the stop releases the blocks' leases (a slow store) used to cut
    the rest of the cleanup short, the leases left held by the program itself, whose rerun
    was then refused as another driver's. The cleanup's steps all run, and the interrupt
    is raised after them. (The two Ctrl-Cs come as KeyboardInterrupts where a signal would
    raise them: the driver's loop, then the lease release.)"""
    import json

    from dbparallel.runtime import launch

    run = tmp_path / "run"
    bars_update, release = launch.BlockBars.update, launch.release_session
    interrupts = []

    def first(bars, block: int, step: int, *args, **kwargs) -> None:
        bars_update(bars, block, step, *args, **kwargs)
        if not interrupts and step >= 4 and all(
                (run / "blocks" / f"block_{b}" / "manifest.json").exists() for b in (0, 1)):
            interrupts.append("training")
            raise KeyboardInterrupt()

    def second(*args, **kwargs):
        if interrupts == ["training"]:
            interrupts.append("cleanup")
            raise KeyboardInterrupt()
        return release(*args, **kwargs)

    monkeypatch.setattr(launch.BlockBars, "update", first)
    monkeypatch.setattr(launch, "release_session", second)
    overrides = {"run.dir": run, "metrics.port": 0, "train.steps": 100000,
                 "train.checkpoint_every": 2, "data.validate": False}
    with pytest.raises(KeyboardInterrupt):
        dbparallel.train(TINY, overrides=overrides, progress=False)
    assert interrupts == ["training", "cleanup"]
    assert [json.loads((run / "blocks" / f"block_{b}" / "lease.json").read_text())["holder"]
            for b in (0, 1)] == ["", ""]
    monkeypatch.undo()
    steps = max(dbparallel.status(run).blocks[b].checkpoint_step for b in (0, 1))
    report = dbparallel.train(TINY, overrides={**overrides, "train.steps": steps},
                              progress=False)  # the rerun in the same program
    assert [r["steps"] for r in report["per_block"]] == [steps, steps]
