"""Blocks with replicas on Ray Train (runtime.replicas_per_block=2, CPU workers with gloo): a
lost replica restarts only its own block's group, which resumes from the block's checkpoint,
and the weights match the same blocks trained with one process each."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from dbparallel.config import load_config
from dbparallel.runtime.launch import run_ray
from dbparallel.runtime.local import run_local
from dbparallel.training.checkpoint import BlockCheckpoints
from dbparallel.training.storage import Storage

pytestmark = pytest.mark.ray
RECIPE = Path(__file__).resolve().parents[2] / "jobs" / "tiny_cpu.yaml"
SAME = ["train.batch_size=30"]


# a minute of Ray Train restarting a group; replicas on Ray Train by default: the
# data-parallel baseline below
@pytest.mark.slow
def test_a_lost_replica_restarts_only_its_block_and_the_weights_match_one_process(
        ray_session, tmp_path) -> None:
    replicated = load_config([RECIPE], [
        f"run.dir={tmp_path / 'two'}", *SAME, "runtime.replicas_per_block=2",
        "runtime.cpus_per_block=0.25", "train.max_restarts=2",
        # rank 1 of block 1 dies at step 8; the last checkpoint is step 6
        "debug.kill_block=1", "debug.kill_at_step=8", "debug.kill_replica=1"])
    report = run_ray(replicated, None, progress=False)
    rows = {row["block"]: row for row in report["per_block"]}
    assert report["replicas_per_block"] == 2
    assert rows[1]["restarts"] == 1 and rows[0]["restarts"] == 0
    assert rows[0]["replicas"] == rows[1]["replicas"] == 2
    assert all(row["steps"] == 12 for row in rows.values())
    assert json.loads((tmp_path / "two" / "blocks" / "block_1" / "restarts.json")
                      .read_text())["restarts"] == 1
    assert not (tmp_path / "two" / "blocks" / "block_0" / "restarts.json").exists()

    single = load_config([RECIPE], [f"run.dir={tmp_path / 'one'}", *SAME, "runtime.local=true"])
    run_local(single, progress=False)
    for block in (0, 1):
        one, two = (BlockCheckpoints(Storage(str(tmp_path / d)), block).load_latest("snapshot")
                    for d in ("one", "two"))
        for name, value in one["ema"].items():
            torch.testing.assert_close(two["ema"][name], value, rtol=1e-4, atol=5e-5,
                                       msg=lambda m, b=block, n=name: f"block {b} {n}: {m}")


def test_a_data_parallel_baseline_is_the_single_process_one(ray_session, tmp_path,
                                                            capsys) -> None:
    """`dbparallel baseline` with runtime.replicas_per_block=2: the end-to-end network trained
    data-parallel by two Ray Train workers, which share each batch; the same training as the
    one-process baseline, and the group leaves no placement group behind."""
    import time

    import ray

    from dbparallel.cli import main

    def live() -> set[str]:
        return {pg for pg, row in ray.util.placement_group_table().items()
                if row["state"] != "REMOVED"}

    before = live()
    for name, extra in (("dp", ["runtime.replicas_per_block=2", "runtime.cpus_per_block=0.25"]),
                        ("one", [])):
        assert main(["baseline", str(RECIPE), f"run.dir={tmp_path / name}", "metrics.port=0",
                     *SAME, *extra]) == 0
    deadline = time.monotonic() + 120  # the group that ended left no placement group
    while live() - before and time.monotonic() < deadline:
        time.sleep(1)
    assert live() - before == set()
    dp, one = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("dp", "one"))
    assert dp["replicas_per_block"] == 2 and dp["per_block"][0]["replicas"] == 2
    assert one["per_block"][0]["replicas"] == 1
    assert dp["blocks"] == one["blocks"] == 1 and dp["run"] == one["run"]
    assert dp["per_block"][0]["final_loss"] == pytest.approx(one["per_block"][0]["final_loss"],
                                                             rel=1e-5)
    a, b = (BlockCheckpoints(Storage(str(tmp_path / d)), 0).load_latest("snapshot")["ema"]
            for d in ("dp", "one"))
    for name, value in b.items():
        torch.testing.assert_close(a[name], value, rtol=1e-4, atol=5e-5)


def test_a_group_knows_its_workers_whatever_order_their_messages_come_in() -> None:
    from dbparallel.runtime.block_group import Roster

    roster = Roster()
    roster.joined(0, "rank 1")  # rank 1's message first: it used to be dropped by rank 0's
    roster.started(0, "rank 0")
    assert roster.current == ["rank 0", "rank 1"]
    roster.started(1, "rank 0 again")  # the group restarted
    assert roster.current == ["rank 0 again"]
    roster.joined(0, "late")  # a message of the old incarnation changes nothing now
    roster.joined(1, "rank 1 again")
    assert roster.current == ["rank 0 again", "rank 1 again"]


class WorkerFailures(RuntimeError):
    """What Ray Train's fit fails with where workers raised: their errors by rank."""

    def __init__(self, failures: dict[int, Exception]):
        super().__init__("Training failed due to worker errors")
        self.worker_failures = failures


@pytest.mark.parametrize("posted,failed,recorded", [
    ([1], [], False), ([1, 0], [], True), ([0, 1], [], True), ([], [1], False), ([], [0, 1], True),
], ids=["rank-1", "rank-1-then-0", "rank-0-then-1", "fit-rank-1", "fit-both"])
def test_a_group_says_whether_its_writer_met_the_error_that_stopped_it(
        tiny_cfg, monkeypatch, posted: list[int], failed: list[int], recorded: bool) -> None:
    """Rank 0 records its own error as the block's failure; one that only another rank met
    (a bad row ``posted`` by it, or its own error that failed the fit), the driver records
    (Event.recorded), at the step that rank trained."""
    import threading

    from dbparallel.errors import DataError
    from dbparallel.runtime import block_group

    running = threading.Event()

    class Trainer:  # Ray Train's fit, without Ray: it runs until told, or fails at once
        def fit(self) -> None:
            if failed:
                raise WorkerFailures({r: RuntimeError("out of memory") for r in failed})
            running.wait(10)

    monkeypatch.setattr(block_group, "trainer_for", lambda *args: Trainer())
    group = block_group.BlockGroup(tiny_cfg, 0, "session", "0123456789ab", queue=None)
    try:
        if failed:
            group.fitted.exception(timeout=10)
        for rank in posted:  # both before the driver looks
            group.take("error", {"error": DataError(f"row {rank}"), "rank": rank,
                                 "step": 3 + rank})
        group.request(4)
        (event,) = group.events()
    finally:
        running.set()
    assert event.recorded is recorded
    if posted:
        assert (str(event.error), event.step) == (("row 0", 3) if recorded else ("row 1", 4))


@pytest.fixture
def idle_group(tiny_cfg, monkeypatch):
    """Block 0's group, with Ray Train's fit replaced by one that runs until the test ends:
    the driver's side of a group, fed its workers' messages by the test."""
    import threading

    from dbparallel.runtime import block_group

    running = threading.Event()

    class Trainer:
        def fit(self) -> None:
            running.wait(10)

    monkeypatch.setattr(block_group, "trainer_for", lambda *args: Trainer())
    group = block_group.BlockGroup(tiny_cfg, 0, "session", "0123456789ab", queue=None)
    yield group
    running.set()


def test_a_group_says_an_error_another_rank_met_at_its_start_was_met_there(idle_group) -> None:
    """Posted with no step (its data index unreadable, say), after the group's progress: the
    driver records it at the block's start, not at the step after its last report."""
    from dbparallel.errors import DataError

    idle_group.take("progress", {"step": 4, "done": False, "restarts": 0})
    idle_group.take("error", {"error": DataError("not there"), "rank": 1, "step": None})
    idle_group.request(8)
    (event,) = idle_group.events()
    assert (event.recorded, event.step, event.at_start) == (False, None, True)


def test_a_group_takes_no_progress_from_an_earlier_incarnation(idle_group) -> None:
    """Rank 0 of a group Ray Train started again (its restarts counted one more) speaks for the
    block: a progress line or summary its fenced-off predecessor posted late changes nothing."""
    group = idle_group
    group.take("start", {"restarts": 1, "actor": "rank 0 again"})
    group.take("progress", {"step": 12, "done": True, "restarts": 0})  # the old one's
    group.take("summary", {"steps": 12, "restarts": 0})
    group.request(6)
    assert group.events() == [] and group.summary is None
    group.take("progress", {"step": 6, "done": False, "restarts": 1})
    (event,) = group.events()
    assert event.result["step"] == 6


def test_a_group_restarted_again_before_its_new_workers_start_kills_nothing(
        ray_session, idle_group) -> None:
    """A stall restart kills the current incarnation's rank 0 once: until the group's next
    rank 0 reports, there is none to kill, and the restart says so (it is not counted as
    one)."""
    import ray

    class Worker:
        def ready(self) -> bool:
            return True

    first, second = (ray.remote(Worker).options(num_cpus=0).remote() for _ in range(2))
    ray.get([first.ready.remote(), second.ready.remote()], timeout=60)
    try:
        assert idle_group.restart() is False  # no worker reported yet
        idle_group.take("start", {"restarts": 0, "actor": first})
        assert idle_group.restart() is True
        assert idle_group.restart() is False  # the new incarnation has not reported
        idle_group.take("start", {"restarts": 1, "actor": second})
        assert idle_group.restart() is True
    finally:
        ray.kill(second, no_restart=True)


@pytest.mark.slow  # another minute of Ray Train
def test_a_stalled_group_is_restarted_and_resumes(ray_session, tmp_path) -> None:
    """The controller's stall restart of a block with replicas: its rank 0 is killed, Ray Train
    starts the group again, the group counts the restart and trains to the end."""
    import time

    from ray.util.queue import Queue

    from dbparallel.data.sources import open_data
    from dbparallel.runtime.block_group import BlockGroup
    from dbparallel.training.data_pin import pin_data
    from dbparallel.training.run_dir import open_run

    cfg = load_config([RECIPE], [f"run.dir={tmp_path / 'run'}", "runtime.replicas_per_block=2",
                                 "runtime.cpus_per_block=0.25", "train.steps=1000",
                                 "train.checkpoint_every=4", "train.max_restarts=1"])
    pin_data(open_run(cfg), open_data(cfg.data))
    queue = Queue(actor_options={"num_cpus": 0})
    group = BlockGroup(cfg, 0, "session", "0123456789ab", queue)

    def drain() -> None:
        for kind, _block, payload in queue.get_nowait_batch(queue.qsize()):
            group.take(kind, payload)

    deadline = time.monotonic() + 300
    while not (group.latest and group.latest.get("step", 0) >= 4 and len(group.workers) == 2):
        assert time.monotonic() < deadline and not group.fitted.done()
        time.sleep(0.2)
        drain()
    first = group.latest["step"]
    group.restart()
    group.fitted.result(timeout=600)
    drain()
    assert first < 1000  # killed while it trained
    assert group.summary["restarts"] == 1 and group.summary["steps"] == 1000


@pytest.mark.slow  # another minute of Ray Train
def test_a_stop_leaves_nothing_of_a_group_in_an_instance_the_program_joined(
        ray_session, tmp_path) -> None:
    """Ctrl-C in a program that joined Ray itself (here the test's session): the backend's
    close kills the group's Ray Train controller too, which, left alive with its workers
    killed, started the group again after the run had returned."""


    backend = _backend(tmp_path)
    group = _training_group(backend)
    backend.close()
    assert _train_actors_left("=", "ALIVE") == []
    group.fitted.exception(timeout=60)  # its fit ended with its controller


@pytest.mark.slow  # another minute of Ray Train
def test_a_stop_removes_the_placement_group_of_a_groups_workers(ray_session, tmp_path,
                                                                monkeypatch) -> None:
    """The group's controller, killed by the stop, had placed its workers: their placement
    group, which Ray keeps as long as the job that joined it lives, is removed, and no other.
    Ray Train's own cleaner of it is left out here, as it is where it cannot reach Ray's state
    API (a program that joined Ray itself with ray.init())."""
    import time

    import ray
    from ray.train.v2._internal.execution.callback import ControllerCallback
    from ray.train.v2.api import data_parallel_trainer
    from ray.util.placement_group import placement_group, remove_placement_group


    class NoCleaner(ControllerCallback):  # sent to the controller by value: defined here
        pass

    monkeypatch.setattr(data_parallel_trainer, "PlacementGroupCleanerCallback", NoCleaner)

    def live() -> set[str]:
        return {pg for pg, row in ray.util.placement_group_table().items()
                if row["state"] != "REMOVED"}

    other = placement_group([{"CPU": 0.01}])  # someone else's, in the same job
    ray.get(other.ready(), timeout=60)
    before = live()
    backend = _backend(tmp_path)
    try:
        group = _training_group(backend)
        workers = live() - before
        assert len(workers) == 1
        backend.close()
        group.fitted.exception(timeout=60)  # its fit ended with its controller
        deadline = time.monotonic() + 120  # removal is asynchronous in Ray
        while live() & workers and time.monotonic() < deadline:
            time.sleep(1)
        assert live() & workers == set()
        assert other.id.hex() in live()
    finally:
        remove_placement_group(other)


@pytest.mark.slow  # another minute of Ray Train
def test_a_stop_while_a_group_starts_ends_its_controller(ray_session, tmp_path,
                                                         monkeypatch) -> None:
    """The stop comes while the group's Ray Train controller starts, before it announced
    itself (held there until the stop returned): it is killed as it does, and starts no
    worker; it used to be missed (a stop waited for it a moment only) and trained on."""
    import time

    import ray
    from ray.train.v2._internal.execution.callback import ControllerCallback

    from dbparallel.runtime import block_group

    starting, stopped = tmp_path / "starting", tmp_path / "stopped"

    class Hold(ControllerCallback):  # sent to the controller by value: defined here
        def after_controller_start(self, train_run_context) -> None:
            starting.touch()
            deadline = time.monotonic() + 600
            while not stopped.exists() and time.monotonic() < deadline:
                time.sleep(0.1)

    trainer_for = block_group.trainer_for

    def held(*args):
        trainer = trainer_for(*args)
        trainer.run_config.callbacks.insert(0, Hold())  # before the controller announces
        return trainer

    monkeypatch.setattr(block_group, "trainer_for", held)
    backend = _backend(tmp_path)
    backend.start_block(0, 0)
    group = backend.groups[0]
    deadline = time.monotonic() + 300
    while not starting.exists():  # its controller's process runs its start
        assert time.monotonic() < deadline and not group.fitted.done()
        time.sleep(0.2)
    backend.close()
    stopped.touch()
    # its fit ended with its controller, which had started no worker
    assert isinstance(group.fitted.exception(timeout=120), ray.exceptions.ActorDiedError)
    assert _train_actors_left("!=", "DEAD") == []


@pytest.mark.slow  # Ray Train restarts the groups a few times before they give up
def test_groups_stop_when_their_run_fails(ray_session, tmp_path) -> None:
    """Block 1 dies past train.max_restarts while block 0 has thousands of steps to go: the run
    fails, and block 0's group, which Ray Train would start again, stops instead of training
    on in the background."""
    import time

    from ray.util.state import list_actors

    from dbparallel.runtime.backend import RunFailed

    cfg = load_config([RECIPE], [
        f"run.dir={tmp_path / 'run'}", "runtime.replicas_per_block=2",
        "runtime.cpus_per_block=0.25", "train.max_restarts=1", "train.block_steps=[20000,12]",
        "debug.kill_block=1", "debug.kill_at_step=8", "debug.kill_times=5"])
    with pytest.raises(RunFailed, match="block 1 failed: its worker group was lost and Ray "
                                         "Train does not start it again"):
        run_ray(cfg, None, progress=False)
    # the driver records the block it gave up, as it does an actor Ray gave up
    failed = json.loads((tmp_path / "run" / "blocks" / "block_1" / "failed.json").read_text())
    assert failed["type"] == "BlockLost" and 1 <= failed["step"] <= 9  # killed at step 8
    assert "a replica's process died" in failed["error"]

    import ray

    here = ray.get_runtime_context().gcs_address  # not whichever instance started last

    def workers() -> int:
        return len(list_actors(address=here, filters=[("class_name", "=", "RayTrainWorker"),
                                                      ("state", "=", "ALIVE")]))

    deadline = time.monotonic() + 300
    while workers() and time.monotonic() < deadline:
        time.sleep(2)
    assert workers() == 0
    lease = json.loads((tmp_path / "run" / "blocks" / "block_0" / "lease.json").read_text())
    assert lease["holder"] == "" and lease["ended"]


def _train_actors_left(op: str, state: str) -> list[str]:
    """The Ray Train controllers and workers of the session's instance whose state ``op``
    ``state`` ("=", "ALIVE"; "!=", "DEAD") once none is, or 120 s have gone by."""
    import time

    import ray
    from ray.util.state import list_actors

    here = ray.get_runtime_context().gcs_address  # not whichever instance started last

    def left() -> list[str]:
        return [a.class_name for a in list_actors(address=here, filters=[("state", op, state)])
                if a.class_name in ("TrainController", "RayTrainWorker")]

    deadline = time.monotonic() + 120
    while left() and time.monotonic() < deadline:
        time.sleep(2)
    return left()


def _backend(tmp_path: Path) -> Any:
    """A RayBackend of one block, run by 2 replicas of 0.25 CPUs, with steps for hours."""
    from dbparallel.data.sources import open_data
    from dbparallel.runtime.ray_backend import RayBackend
    from dbparallel.training.data_pin import pin_data
    from dbparallel.training.run_dir import open_run

    cfg = load_config([RECIPE], [f"run.dir={tmp_path / 'run'}", "runtime.replicas_per_block=2",
                                 "runtime.cpus_per_block=0.25", "train.steps=100000",
                                 "train.max_restarts=2"])
    pin_data(open_run(cfg), open_data(cfg.data))
    return RayBackend(cfg, None, 1, "session", "0123456789ab")


def _training_group(backend: Any) -> Any:
    """``backend``'s block 0 started, once both its workers train."""
    import time

    backend.start_block(0, 0)
    group = backend.groups[0]
    deadline = time.monotonic() + 300
    while len(group.workers) < 2:  # it trains
        assert time.monotonic() < deadline and not group.fitted.done()
        time.sleep(0.2)
        backend._drain()
    return group
