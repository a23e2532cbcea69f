"""The Ray backend (runtime/ray_backend.py) where a block's processes are lost after its last
step, before its summary: one new process of the block reads the summary from its final
checkpoint (runtime/summary_rescue.py); where that fails too, the block is given up as
BlockLost, as one lost while it trains, never a raw Ray error."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from dbparallel.config import load_config
from dbparallel.runtime.backend import BlockLost

pytestmark = pytest.mark.ray
RECIPE = Path(__file__).resolve().parents[2] / "jobs" / "tiny_cpu.yaml"


@pytest.mark.parametrize("again", ["sends", "dies", "short"])
def test_a_block_actor_lost_before_its_summary(ray_session, tmp_path, monkeypatch,
                                               again) -> None:
    """train.max_restarts=0: the actor killed between its last report and its summary. A new
    process of the block is asked for the summary: where it sends one of all the block's
    steps (its final checkpoint), that is the block's; where it dies too, or its newest
    checkpoint is short of the steps, the block is lost (BlockLost), never a raw Ray error."""
    import ray

    from dbparallel.runtime import ray_backend

    class Block:  # a block actor's stand-in; sent to the actor by value: defined here
        """``summary`` of a process that trained ``steps``; ``dies``: it dies instead."""

        def __init__(self, *args, steps: int = 0, dies: bool = False):
            self.steps, self.dies = steps, dies

        def summary(self) -> dict:
            if self.dies:
                import os

                os._exit(1)
            return {"block": 0, "steps": self.steps}

    cfg = load_config([RECIPE], [f"run.dir={tmp_path / 'run'}", "train.max_restarts=0",
                                 "train.steps=4"])
    new = {"sends": {"steps": 4}, "dies": {"dies": True}, "short": {"steps": 2}}[again]

    class NewBlock(Block):
        def __init__(self, *args):
            super().__init__(**new)

    monkeypatch.setattr(ray_backend, "BlockActor", NewBlock)
    backend = ray_backend.RayBackend(cfg, None, 1, "session", "run")
    actor = ray.remote(Block).options(num_cpus=0, max_restarts=0).remote()
    backend.actors[0], backend.slots_of[0] = actor, -1  # no placement group
    try:
        ray.kill(actor, no_restart=True)
        lost = (r"its process was lost after its last step, before it sent its summary "
                r"\(\S.*\), and ")
        if again == "sends":
            backend.finish_block(0)
            assert backend.finished[0] == {"block": 0, "steps": 4}
        else:
            said = ("a new process of it did not send it either: " if again == "dies" else
                    "its newest checkpoint is of step 2 of 4")
            with pytest.raises(BlockLost, match=lost + said):
                backend.finish_block(0)
            assert 0 not in backend.finished
        assert 0 not in backend.actors
    finally:
        backend.close()


class FitFailed(RuntimeError):
    """What Ray Train's fit fails with where a worker died: its failure by rank."""

    def __init__(self):
        super().__init__("Training failed due to worker errors")
        self.worker_failures = {0: ray_died()}


def ray_died() -> Exception:
    import ray

    return ray.exceptions.ActorDiedError()


@pytest.mark.parametrize("fit", ["fails", "hangs", "no-summary"])
def test_a_group_lost_before_its_summary_is_a_lost_block(tiny_cfg, monkeypatch, fit) -> None:
    """A group whose fit fails for good after its last report, does not end, or ends without
    the summary of its rank 0."""
    import threading

    from dbparallel.runtime import block_group

    running = threading.Event()

    class Trainer:  # Ray Train's fit, without Ray
        def fit(self) -> SimpleNamespace:
            if fit == "fails":
                raise FitFailed()
            if fit == "hangs":
                running.wait(10)
            return SimpleNamespace(error=None)

    monkeypatch.setattr(block_group, "trainer_for", lambda *args: Trainer())
    group = block_group.BlockGroup(tiny_cfg, 0, "session", "0123456789ab", queue=None)
    said = {"fails": "its worker group was lost and Ray Train does not start it again",
            "hangs": "its worker group did not end within 0.1 s of its last step",
            "no-summary": "its worker group ended without sending its summary"}[fit]
    try:
        with pytest.raises(BlockLost, match=said):
            group.finish(lambda: None, timeout_s=0.1 if fit == "hangs" else 10)
    finally:
        running.set()


@pytest.mark.parametrize(("fit", "again"), [("fails", "sends"), ("no-summary", "sends"),
                                            ("fails", "dies"), ("fails", "short")])
def test_a_group_lost_before_its_summary_is_summed_up_by_one_process(
        ray_session, tmp_path, monkeypatch, caplog, fit, again) -> None:
    """runtime.replicas_per_block=2, train.max_restarts=0: the group's fit fails for good
    after its last report, or ends without rank 0's summary. One new process of the block (a
    block actor with the block's CPUs, outside any placement group) is asked for the summary:
    where it sends one of all the block's steps, that is the block's, of the group's replicas;
    where it dies, or its newest checkpoint is short of the steps, the block is lost."""
    import ray

    from dbparallel.runtime import block_group, ray_backend

    class Trainer:  # Ray Train's fit, without Ray Train
        def fit(self) -> SimpleNamespace:
            if fit == "fails":
                raise FitFailed()
            return SimpleNamespace(error=None)

    new = {"sends": {"steps": 4}, "dies": {"dies": True}, "short": {"steps": 2}}[again]

    class NewBlock:  # a block actor's stand-in; sent to the actor by value: defined here
        def __init__(self, *args):
            self.steps, self.dies = new.get("steps", 0), new.get("dies", False)

        def summary(self) -> dict:
            if self.dies:
                import os

                os._exit(1)
            here = ray.get_runtime_context()
            return {"block": 0, "steps": self.steps, "replicas": 1,
                    "cpus": here.get_assigned_resources().get("CPU"),
                    "placed": here.get_placement_group_id() is not None}

    monkeypatch.setattr(block_group, "trainer_for", lambda *args: Trainer())
    monkeypatch.setattr(ray_backend, "BlockActor", NewBlock)
    cfg = load_config([RECIPE], [f"run.dir={tmp_path / 'run'}", "train.max_restarts=0",
                                 "train.steps=4", "runtime.replicas_per_block=2"])
    backend = ray_backend.RayBackend(cfg, None, 1, "session", "run")
    backend.start_block(0, 0)
    lost = {"fails": "its worker group was lost and Ray Train does not start it again",
            "no-summary": "its worker group ended without sending its summary"}[fit]
    try:
        if again == "sends":
            with caplog.at_level("WARNING", logger="dbparallel.runtime.summary_rescue"):
                backend.finish_block(0)
            assert backend.finished[0] == {"block": 0, "steps": 4, "replicas": 2,
                                           "cpus": cfg.runtime.cpus_per_block,
                                           "placed": False}
            (said,) = [r.getMessage() for r in caplog.records  # one line says what happened
                       if r.name == "dbparallel.runtime.summary_rescue"]
            assert said.startswith(f"block 0: {lost}")
            assert said.endswith("; a new process of the block reads its summary from its "
                                 "final checkpoint")
        else:
            said = ("a new process of it did not send it either: " if again == "dies" else
                    "its newest checkpoint is of step 2 of 4")
            with pytest.raises(BlockLost, match=rf"^{lost}.*, and {said}"):
                backend.finish_block(0)
            assert 0 not in backend.finished
        assert 0 not in backend.groups
    finally:
        backend.close()


def test_a_lost_progress_queue_fails_the_run_in_words(ray_session, tmp_path) -> None:
    """The queue on which the groups' rank 0 workers post their progress is an actor Ray does
    not start again: once it is lost, the driver's next read fails the run saying so (a
    RunFailed, one line), where it raised Ray's own error."""
    import ray
    from ray.util.queue import Queue

    from dbparallel.runtime.backend import RunFailed
    from dbparallel.runtime.ray_backend import RayBackend

    cfg = load_config([RECIPE], [f"run.dir={tmp_path / 'run'}", "runtime.replicas_per_block=2"])
    backend = RayBackend(cfg, None, 1, "session", "run")
    backend.queue = Queue(actor_options={"num_cpus": 0})
    backend.groups[0] = SimpleNamespace(events=lambda: [])  # a group waiting for its workers
    backend.queue.put(("progress", 0, {}))
    ray.kill(backend.queue.actor, no_restart=True)
    with pytest.raises(RunFailed, match=r"^the queue on which the blocks with replicas post "
                                        r"their progress was lost or did not answer within "
                                        r"60 s \(\S.*\); every block's checkpoints are kept"):
        backend.poll(0.1)
