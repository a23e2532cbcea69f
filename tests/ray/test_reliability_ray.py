"""A block that keeps failing fails the run, naming it, and leaves the others' checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbparallel.config import load_config
from dbparallel.runtime.backend import RunFailed
from dbparallel.runtime.launch import run_ray
from dbparallel.training.checkpoint import BlockCheckpoints
from dbparallel.training.run_files import run_config
from dbparallel.training.status import run_status
from dbparallel.training.storage import Storage

pytestmark = pytest.mark.ray
RECIPE = Path(__file__).resolve().parents[2] / "jobs" / "tiny_cpu.yaml"


def test_block_failing_past_max_restarts_fails_the_run(ray_session, tmp_path) -> None:
    run_dir = tmp_path / "run"
    cfg = load_config([RECIPE], [f"run.dir={run_dir}", "train.max_restarts=1",
                                 "debug.kill_block=1", "debug.kill_at_step=8",
                                 "debug.kill_times=5"])
    with pytest.raises(RunFailed, match=r"block 1 failed: its process was lost and Ray does "
                                        r"not start it again \(train.max_restarts=1\): \S"):
        run_ray(cfg, None, progress=False)
    storage = Storage(str(run_dir))
    assert BlockCheckpoints(storage, 1).restarts() == 1  # died twice: the first run + 1 restart
    lost = run_status(storage, run_config(str(run_dir))).blocks[1]  # `dbparallel status`
    assert lost.state == "failed" and lost.failure.startswith("BlockLost: its process was lost")
    assert lost.failed_step is not None and 1 <= lost.failed_step <= 9  # killed at step 8
    # block 0 was stopped with the run wherever it had got to (how far depends on how fast
    # the machine is): every checkpoint it listed is whole
    survivor = BlockCheckpoints(storage, 0)
    for step in survivor.steps("state"):
        assert survivor.load_latest("state", step)["step"] == step  # checksum-verified


def test_a_block_lost_before_its_summary_is_summed_up_by_a_new_process(
        ray_session, tmp_path, monkeypatch) -> None:
    """train.max_restarts=0, block 1's process dies between its last report and its summary:
    its steps are all in its final checkpoint, so a new process of it resumes from there,
    trains nothing, and sends the summary; the run ends as if nothing was lost."""
    import os

    from dbparallel.runtime import ray_backend
    from dbparallel.runtime.block_actor import BlockActor

    died = tmp_path / "died"

    class DiesBeforeItsSummary(BlockActor):  # sent to the actor by value: defined here
        def summary(self) -> dict:
            if self.block == 1 and not os.path.exists(died):
                open(died, "w").close()
                os._exit(1)
            return super().summary()

    monkeypatch.setattr(ray_backend, "BlockActor", DiesBeforeItsSummary)
    run_dir = tmp_path / "run"
    cfg = load_config([RECIPE], [f"run.dir={run_dir}", "train.max_restarts=0",
                                 "train.steps=4", "train.checkpoint_every=4"])
    report = run_ray(cfg, None, progress=False)
    assert died.exists()  # block 1's first process did die
    assert [row["steps"] for row in report["per_block"]] == [4] * cfg.model.blocks
    assert not (run_dir / "blocks" / "block_1" / "failed.json").exists()
    assert BlockCheckpoints(Storage(str(run_dir)), 1).restarts() == 0


def test_a_block_actor_refused_at_its_start_is_one_line_and_exit_2(ray_session, tmp_path,
                                                                   capsys) -> None:
    """Bad input a block actor meets as it starts (here a damaged manifest) reaches the
    driver as that error, as in local mode: one line naming the file, exit 2, no restart."""
    from dbparallel.cli import main

    run_dir = tmp_path / "run"
    common = ["train", str(RECIPE), f"run.dir={run_dir}", "metrics.port=0", "train.steps=2",
              "train.checkpoint_every=2"]
    assert main([*common, "--local", "--block", "1"]) == 0
    (run_dir / "blocks" / "block_1" / "manifest.json").write_text('{"state": [')
    capsys.readouterr()
    assert main([*common, "train.steps=4"]) == 2  # on Ray: both blocks as actors
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith(
        f"dbparallel: error: block 1: {run_dir}/blocks/block_1/manifest.json is damaged")
    assert "Traceback" not in err and "restarts" not in err
    assert BlockCheckpoints(Storage(str(run_dir)), 1).restarts() == 0


@pytest.mark.parametrize("whom", [
    "driver",
    # a second minute of Ray: opt-in
    pytest.param("group", marks=pytest.mark.slow)])
def test_sigterm_stops_a_ray_run_as_ctrl_c_does(tmp_path, whom: str) -> None:
    """``kill``, ``ray job stop`` and a stopping pod send the driver SIGTERM, for which
    ray.init installs a handler that aborts with a crash dump: the run stops as on Ctrl-C,
    in one line, exit 143, its leases released. A driver of its own private instance.
    ``timeout``, Slurm and systemd send it to the whole process group, Ray's own processes
    of the private instance too: the driver does not wait on them (it waited for Ray's
    placement group, then aborted after 60 s without its GCS)."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dbparallel", "train", str(RECIPE), f"run.dir={run_dir}",
         "metrics.port=0", "train.steps=100000", "train.checkpoint_every=2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=whom == "group")
    try:
        manifest = run_dir / "blocks" / "block_0" / "manifest.json"
        deadline = time.monotonic() + 300  # a hang guard only
        while not manifest.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert manifest.exists(), proc.poll()
        if whom == "group":
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.send_signal(signal.SIGTERM)  # the driver alone, as kill sends it
        out, err = proc.communicate(timeout=180)  # a hang guard only
    finally:
        proc.kill()
    assert proc.returncode == 143, err[-3000:]
    assert err.strip().splitlines()[-1] == \
        "dbparallel: stopped (SIGTERM) (run the same command again to resume)"
    assert "SIGTERM received" not in err and "Traceback" not in err
    # the actors' pending calls are cancelled before they are killed: Ray does not announce
    # their retry ("Task BlockActor.train failed. There are 3 retries remaining ...")
    if whom == "driver":  # (Ray's processes stopped with the group say more)
        assert "will be retried" not in out + err
    for b in (0, 1):
        lease = json.loads((run_dir / "blocks" / f"block_{b}" / "lease.json").read_text())
        assert lease["holder"] == "" and lease["ended"]


def test_an_assembler_that_cannot_be_placed_fails_before_training(ray_session, tmp_path) -> None:
    """The session's instance has 2 CPUs: an assembly actor of 2.5 CPUs never fits, even
    beside a single block (with 1.5 the blocks would train one at a time, in waves). Refused at
    once, not after training, naming the keys."""
    from dbparallel.errors import UserError

    run_dir = tmp_path / "run"
    cfg = load_config([RECIPE], [f"run.dir={run_dir}", "runtime.assembly_cpus=2.5",
                                 "runtime.placement_timeout_s=5"])
    with pytest.raises(UserError, match="runtime.cpus_per_block/runtime.assembly_cpus: the run "
                                        "asks for 3 CPUs in all"):
        run_ray(cfg, None, progress=False)
    assert not (run_dir / "blocks").exists()  # no block trained for nothing


def test_a_named_cluster_with_no_room_yet_is_asked_for_every_block(
        ray_session, tmp_path, capsys) -> None:
    """A cluster named by runtime.address that has no GPU now (its GPU nodes are still
    starting, or an autoscaler adds them) is asked for both blocks at once, not one at a
    time; here none ever joins, so the wait ends after runtime.placement_timeout_s, naming
    the keys."""
    import ray

    from dbparallel.errors import UserError

    run_dir = tmp_path / "run"
    cfg = load_config([RECIPE], [f"run.dir={run_dir}", "runtime.gpus_per_block=1",
                                 f"runtime.address={ray.get_runtime_context().gcs_address}",
                                 "runtime.placement_timeout_s=2"])
    with pytest.raises(UserError, match=r"runtime.cpus_per_block/gpus_per_block: 2 blocks x "
                                        r".*not even one block fits it now"):
        run_ray(cfg, None, progress=False)
    out = capsys.readouterr().out
    assert "the run asks for 2 GPU" in out and "waiting up to" in out
    assert "blocks train at once" not in out  # no waves of one
    assert not (run_dir / "blocks").exists()


def test_a_cluster_that_makes_room_for_fewer_blocks_than_asked_trains_in_waves(
        ray_session, tmp_path, capsys) -> None:
    """Asked for both blocks (as a joined cluster with no room at the start is), a cluster
    that has room for one when runtime.placement_timeout_s ends trains one at a time."""
    import ray
    from ray.util.placement_group import remove_placement_group

    from dbparallel.runtime.placement import reserve_start

    cfg = load_config([RECIPE], [f"run.dir={tmp_path / 'run'}", "runtime.cpus_per_block=1",
                                 "runtime.assembly_cpus=0.5", "runtime.placement_timeout_s=2",
                                 f"runtime.address={ray.get_runtime_context().gcs_address}"])
    pg, assembly_index, slots = reserve_start(cfg, 2)  # 2.5 CPUs asked of 2
    try:
        assert (slots, assembly_index) == (1, 1)
        assert ray.get(pg.ready(), timeout=60)
    finally:
        remove_placement_group(pg)
    assert "the cluster has room for 1 of the 2 blocks asked" in capsys.readouterr().out
