"""The controller state machine, stepped against a fake backend (no Ray)."""

from __future__ import annotations

import pytest

from dbparallel.config import load_config
from dbparallel.errors import DataError
from dbparallel.runtime.backend import BlockLost, Event, RunFailed
from dbparallel.runtime.controller import MAX_UNAVAILABLE, Controller, State


class FakeBackend:
    """Blocks advance to whatever step they are asked for, unless told to hang or fail."""

    def __init__(self, steps: int, hang: set[int] = frozenset(), fail: dict | None = None,
                 assembly_errors: list | None = None, assembly_hangs: bool = False,
                 restarted_at: dict[int, int] | None = None, restarts_before: int = 0):
        self.steps, self.hang, self.fail = steps, set(hang), fail or {}
        self.restarted_at = restarted_at or {}  # block -> the step from which it reports 1
        self.restarts_before = restarts_before  # every block's restarts in earlier runs
        self.assembly_errors = list(assembly_errors or [])  # errors of the next assemblies
        self.assembly_hangs = assembly_hangs
        self.queue: list[Event] = []
        self.calls: list[tuple] = []
        self.restarted: list[int] = []
        self.unstarted: set[int] = set()  # blocks whose restarted processes have not started
        self.resumed_from: int | None = None  # a restarted block's checkpoint (default: the
        # step it died at)

    def start_block(self, block: int, slot: int) -> None:
        self.calls.append(("start", block, slot))

    def finish_block(self, block: int) -> None:
        self.calls.append(("finish", block))

    def submit_train(self, block: int, until: int) -> None:
        self.calls.append(("train", block, until))
        if block in self.hang:
            return
        if block in self.fail:  # an error, or the whole event that answers the call
            failed = self.fail[block]
            self.queue.append(failed if isinstance(failed, Event)
                              else Event("train", block, error=failed))
            return
        restarted = until >= self.restarted_at.get(block, self.steps + 1)
        # a restarted block resumes from its checkpoint of the step its process died at
        since = {"resumed_from": self.resumed_from if self.resumed_from is not None
                 else self.restarted_at[block]} if restarted else {}
        self.queue.append(Event("train", block, {"step": until, "done": until >= self.steps,
                                                 "loss": 1.0 / until,
                                                 "restarts": self.restarts_before + restarted,
                                                 **since}))

    def submit_assemble(self, write_samples: bool) -> None:
        self.calls.append(("assemble", write_samples))
        if self.assembly_hangs and write_samples:
            return
        error = self.assembly_errors.pop(0) if self.assembly_errors else None
        self.queue.append(Event("assemble", None, None if error else {"sample_accuracy": 0.5},
                                error=error))

    def restart_block(self, block: int) -> bool:
        self.restarted.append(block)
        return block not in self.unstarted

    def poll(self, timeout_s: float) -> list[Event]:
        events, self.queue = self.queue, []
        return events

    def summaries(self) -> list[dict]:
        return []


def _cfg(*overrides: str):
    return load_config([], ["model.blocks=2", "model.depth=2", "train.steps=10",
                            "train.log_every=4", *overrides])


def test_chunks_then_assembly() -> None:
    backend = FakeBackend(steps=10)
    progress: list[tuple] = []
    controller = Controller(_cfg(), backend,
                            on_progress=lambda b, s, loss, n: progress.append((b, s)))
    assert controller.run() == {"sample_accuracy": 0.5}
    trains = [c for c in backend.calls if c[0] == "train"]
    assert trains == [("train", 0, 4), ("train", 1, 4), ("train", 0, 8), ("train", 1, 8),
                      ("train", 0, 10), ("train", 1, 10)]
    assert backend.calls[-1] == ("assemble", True)
    assert (0, 10) in progress and (1, 10) in progress
    assert controller.state == State.DONE


def test_blocks_beyond_the_slots_queue_and_train_in_waves() -> None:
    backend = FakeBackend(steps=10)
    clock = iter(range(1000))
    controller = Controller(_cfg("model.blocks=4", "model.depth=4"), backend, slots=2,
                            clock=lambda: float(next(clock)))
    controller.run()
    starts = [c for c in backend.calls if c[0] in ("start", "finish")]
    assert starts == [("start", 0, 0), ("start", 1, 1), ("finish", 0), ("finish", 1),
                      ("start", 2, 0), ("start", 3, 1), ("finish", 2), ("finish", 3)]
    trains = [c[1] for c in backend.calls if c[0] == "train"]
    assert trains == [0, 1] * 3 + [2, 3] * 3  # blocks 2 and 3 wait for a free slot
    schedule = controller.schedule()
    assert [row["slot"] for row in schedule] == [0, 1, 0, 1]
    # the second wave starts after the first one finished
    assert min(r["started_s"] for r in schedule[2:]) >= max(r["finished_s"] for r in schedule[:2])


def test_a_queued_block_is_never_reported_stalled() -> None:
    backend = FakeBackend(steps=10, hang={0})
    now = [0.0]
    stalls: list[tuple] = []
    controller = Controller(_cfg("train.stall_timeout_s=5", "train.max_restarts=1"), backend,
                            slots=1, clock=lambda: now[0],
                            on_stall=lambda b, stalled: stalls.append((b, stalled)))
    for _ in range(3):
        controller.step(0)
        now[0] += 10
    assert stalls == [(0, True)] and backend.restarted == [0]  # block 1 waits, unreported
    assert [c for c in backend.calls if c[0] == "start"] == [("start", 0, 0)]


def test_periodic_assembly_during_training() -> None:
    backend = FakeBackend(steps=10)
    Controller(_cfg("train.assemble_every=4"), backend,  # the driver records the final one
               on_final_assembly=lambda: backend.calls.append(("final",))).run()
    assert backend.calls.count(("assemble", False)) == 2  # at steps 4 and 8
    assert backend.calls.count(("final",)) == 1
    assert backend.calls[-2:] == [("final",), ("assemble", True)]


@pytest.mark.parametrize("error", [RuntimeError("out of memory"),
                                   RuntimeError("block 1: out of memory"),
                                   BlockLost("its process was lost: out of memory")])
def test_lost_block_fails_the_run_naming_it(error: Exception) -> None:
    backend = FakeBackend(steps=10, fail={1: error})
    given_up: list[tuple] = []
    controller = Controller(_cfg(), backend,
                            on_block_failed=lambda *failed: given_up.append(failed))
    try:
        controller.run()
    except RunFailed as err:
        assert str(err) == f"block 1 failed: {str(error).removeprefix('block 1: ')}"
    else:
        raise AssertionError("the run should have failed")
    assert not any(c[0] == "assemble" for c in backend.calls)
    # a process Ray gave up is recorded by the driver; an error of the block's own training
    # was recorded by the block
    assert given_up == ([(1, 1, error)] if isinstance(error, BlockLost) else [])


@pytest.mark.parametrize("recorded,step", [(True, None), (False, 3), (False, None)],
                         ids=["by-its-writer", "by-no-one", "by-no-one-at-its-start"])
def test_a_bad_row_fails_the_run_and_the_driver_records_it_where_no_writer_did(
        recorded: bool, step: int | None) -> None:
    """A bad row met by a replica other than rank 0 (which writes nothing in the block's
    directory) is recorded by the driver, at the step that replica trained, or at the block's
    start where it met it there (its data index, say); one the block's writer met, the writer
    recorded."""
    bad = DataError("part-00000.parquet row 7: column 'label' has label 12")
    backend = FakeBackend(steps=10, fail={1: Event("train", 1, error=bad, recorded=recorded,
                                                   step=step, at_start=step is None)})
    given_up: list[tuple] = []
    controller = Controller(_cfg(), backend,
                            on_block_failed=lambda *failed: given_up.append(failed))
    with pytest.raises(DataError) as raised:  # the run's own error, as a block actor's
        controller.run()
    assert raised.value is bad and controller.error == f"block 1: {bad}"
    assert given_up == ([] if recorded else [(1, step, bad)])


def test_an_error_only_another_replica_met_is_recorded_after_the_last_report() -> None:
    lost = RuntimeError("Training failed due to worker errors: rank 1: out of memory")
    backend = FakeBackend(steps=10, fail={1: Event("train", 1, error=lost, recorded=False)})
    given_up: list[tuple] = []
    with pytest.raises(RunFailed, match="block 1 failed: Training failed"):
        Controller(_cfg(), backend,
                   on_block_failed=lambda *failed: given_up.append(failed)).run()
    assert given_up == [(1, 1, lost)]  # the step after its last report (none yet)


def test_a_block_lost_before_its_summary_fails_the_run_and_is_recorded() -> None:
    """A block done training whose process is lost before it sends its summary (Ray does not
    start it again) fails the run as a block lost while it trains, and the driver records it;
    the run does not end on the backend's error."""
    lost = BlockLost("its process was lost after its last step, before it sent its summary")

    class LosesSummaries(FakeBackend):
        def finish_block(self, block: int) -> None:
            super().finish_block(block)
            if block == 1:
                raise lost

    backend = LosesSummaries(steps=10)
    given_up: list[tuple] = []
    controller = Controller(_cfg(), backend,
                            on_block_failed=lambda *failed: given_up.append(failed))
    with pytest.raises(RunFailed, match="block 1 failed: its process was lost after its last"):
        controller.run()
    assert given_up == [(1, 11, lost)]
    assert not any(c[0] == "assemble" for c in backend.calls)


def test_stalled_block_is_reported() -> None:
    now = [0.0]
    stalls: list[tuple[int, bool]] = []
    backend = FakeBackend(steps=10, hang={1})
    controller = Controller(_cfg("train.stall_timeout_s=30"), backend,
                            on_stall=lambda b, s: stalls.append((b, s)), clock=lambda: now[0])
    for _ in range(3):
        controller.step()
        now[0] += 20.0
    assert stalls == [(1, True)]
    assert controller.blocks[1].stalled and not controller.blocks[0].stalled
    assert controller.state == State.TRAINING


def test_a_failed_assembly_during_training_is_counted_not_fatal() -> None:
    backend = FakeBackend(steps=10, assembly_errors=[FileNotFoundError("snapshot moved")])
    failures: list[str] = []
    controller = Controller(_cfg("train.assemble_every=4"), backend,
                            on_assembly_failed=failures.append)
    assert controller.run() == {"sample_accuracy": 0.5}
    assert len(failures) == 1 and "snapshot moved" in failures[0]


def test_a_failed_final_assembly_fails_the_run_saying_how_to_retry() -> None:
    backend = FakeBackend(steps=10, assembly_errors=[RuntimeError("out of memory")])
    controller = Controller(_cfg("run.dir=/runs/x"), backend)
    try:
        controller.run()
    except RunFailed as err:
        assert "out of memory" in str(err) and "dbparallel eval /runs/x" in str(err)
    else:
        raise AssertionError("the run should have failed")


def test_a_hung_final_assembly_fails_after_its_timeout() -> None:
    now = [0.0]
    backend = FakeBackend(steps=10, assembly_hangs=True)
    controller = Controller(_cfg("train.assembly_timeout_s=60"), backend, clock=lambda: now[0])
    for _ in range(10):
        if controller.step() == State.FAILED:
            break
        now[0] += 10.0
    assert controller.state == State.FAILED and "train.assembly_timeout_s=60" in controller.error
    assert "dbparallel eval" in controller.error


def test_a_hung_assembly_during_training_fails_the_run_saying_training_resumes() -> None:
    """The blocks are not done: the same command resumes them, it does not assemble them
    at once (nor does `dbparallel eval` stand for the report)."""

    class HangsDuringTraining(FakeBackend):
        def submit_assemble(self, write_samples: bool) -> None:
            if write_samples:
                super().submit_assemble(write_samples)
            else:
                self.calls.append(("assemble", write_samples))

    now = [0.0]
    backend = HangsDuringTraining(steps=10, hang={1})
    controller = Controller(_cfg("train.assemble_every=4", "train.assembly_timeout_s=60"),
                            backend, clock=lambda: now[0])
    controller.blocks[1].step = 4  # past the first multiple, hung on its next chunk
    for _ in range(10):
        if controller.step() == State.FAILED:
            break
        now[0] += 10.0
    assert controller.state == State.FAILED and "train.assembly_timeout_s=60" in controller.error
    assert "resumes the blocks from them, and assembles them once every block is done" in \
        controller.error
    assert "assembles them again" not in controller.error and "eval" not in controller.error


def test_a_stalled_block_is_restarted_then_fails_the_run() -> None:
    now = [0.0]
    backend = FakeBackend(steps=10, hang={1})
    given_up: list[tuple] = []
    controller = Controller(_cfg("train.stall_timeout_s=30", "train.max_restarts=2"), backend,
                            clock=lambda: now[0],
                            on_block_failed=lambda *failed: given_up.append(failed))
    states = []
    for _ in range(12):
        states.append(controller.step())
        now[0] += 20.0
    assert backend.restarted == [1, 1]  # killed so that it restarts and resumes, twice
    assert controller.state == State.FAILED
    assert "block 1 made no progress" in controller.error and "after 2 restarts" in controller.error
    assert [(b, step, type(err).__name__, str(err)) for b, step, err in given_up] == [
        (1, 1, "BlockStalled", controller.error)]


def test_a_stall_with_no_process_to_restart_is_not_said_to_be_a_restart(caplog) -> None:
    """A group restarted for a stall whose new workers have not started when it stalls again
    has nothing to kill: the stall counts towards giving the block up, but neither the
    warning nor the failure says a restart happened."""
    now = [0.0]
    backend = FakeBackend(steps=10, hang={1})
    controller = Controller(_cfg("train.stall_timeout_s=30", "train.max_restarts=2"), backend,
                            clock=lambda: now[0])
    while controller.step() != State.FAILED and now[0] < 1000:
        if backend.restarted:
            backend.unstarted.add(1)  # after the first restart, none to kill again
        now[0] += 20.0
    assert backend.restarted == [1, 1]
    assert "after 1 restarts and 1 more stall timeouts in which its restarted processes " \
           "had not started (none to restart) (train.max_restarts)" in controller.error
    said = [r.getMessage() for r in caplog.records if "no progress for" in r.getMessage()]
    assert "restarting it (1 of" in said[0] and "none to restart (2 of" in said[1]


def test_an_unreachable_block_is_asked_again() -> None:
    from dbparallel.runtime.backend import BlockUnavailable

    class Flaky(FakeBackend):
        def __init__(self) -> None:
            super().__init__(steps=10)
            self.lost = 2  # block 1's node is lost: two calls find it unreachable

        def submit_train(self, block: int, until: int) -> None:
            if block == 1 and self.lost:
                self.lost -= 1
                self.calls.append(("train", block, until))
                self.queue.append(Event("train", 1, error=BlockUnavailable("node lost")))
                return
            super().submit_train(block, until)

    backend = Flaky()
    given_up: list[tuple] = []
    assert Controller(_cfg(), backend, on_block_failed=lambda *failed: given_up.append(failed)
                      ).run() == {"sample_accuracy": 0.5}
    assert backend.calls.count(("train", 1, 4)) == 3  # asked again until it answered
    assert given_up == []  # a passing error is no failure
    backend = Flaky()
    backend.lost = MAX_UNAVAILABLE + 1  # unreachable past its retries: given up, recorded
    with pytest.raises(RunFailed, match="block 1 failed: node lost"):
        Controller(_cfg(), backend, on_block_failed=lambda *failed: given_up.append(failed)
                   ).run()
    assert [(b, step, str(err)) for b, step, err in given_up] == [(1, 1, "node lost")]


def test_an_unreachable_block_is_said_plainly_and_ray_s_error_once(caplog) -> None:
    from dbparallel.errors import DataUnreachable
    from dbparallel.runtime.backend import BlockUnavailable

    ray_said = ("The actor 5d3e is unavailable: The actor is temporarily unavailable: "
                "RpcError: RPC Error message: Socket closed. The task may or may not have "
                "been executed on the actor.\nmore of Ray's text")
    errors = [BlockUnavailable(ray_said)] * 3 + [DataUnreachable("s3://b/p: 503 SlowDown")]

    class Flaky(FakeBackend):
        def submit_train(self, block: int, until: int) -> None:
            if block == 1 and errors:
                self.queue.append(Event("train", 1, error=errors.pop(0)))
                return
            super().submit_train(block, until)

    caplog.set_level("WARNING", logger="dbparallel.runtime.controller")
    assert Controller(_cfg(), Flaky(steps=10)).run() == {"sample_accuracy": 0.5}
    first = ray_said.splitlines()[0]
    assert [r.getMessage() for r in caplog.records if "asking again" in r.getMessage()] == [
        f"block 1: its process does not answer (its node may be lost): asking again, "
        f"1 of {MAX_UNAVAILABLE} (Ray: {first})",
        *(f"block 1: its process does not answer (its node may be lost): asking again, "
          f"{n} of {MAX_UNAVAILABLE}" for n in (2, 3)),
        f"block 1: its data is out of reach: asking again, 4 of {MAX_UNAVAILABLE} "
        f"(s3://b/p: 503 SlowDown)"]


class PerBlockBackend(FakeBackend):
    """A block is done at its own step count (train.block_steps)."""

    def __init__(self, block_steps: list[int]):
        super().__init__(steps=max(block_steps))
        self.block_steps = block_steps

    def submit_train(self, block: int, until: int) -> None:
        self.calls.append(("train", block, until))
        self.queue.append(Event("train", block, {"step": until,
                                                 "done": until >= self.block_steps[block],
                                                 "loss": 1.0 / until, "restarts": 0}))


def test_block_steps_give_each_block_its_own_count() -> None:
    backend = PerBlockBackend([10, 5])
    controller = Controller(_cfg("train.block_steps=[10,5]"), backend)
    controller.run()
    trains = [c[1:] for c in backend.calls if c[0] == "train"]
    assert [u for b, u in trains if b == 0] == [4, 8, 10]
    assert [u for b, u in trains if b == 1] == [4, 5]  # capped at its own 5 steps
    assert backend.calls[-1] == ("assemble", True) and controller.state == State.DONE


@pytest.mark.parametrize("before", [0, 2])  # a fresh run; a rerun after two restarts
def test_a_restarted_block_is_said_once_and_counted_on_its_progress(caplog,
                                                                    before: int) -> None:
    backend = FakeBackend(steps=10, restarted_at={1: 8}, restarts_before=before)
    seen: list[tuple] = []
    controller = Controller(_cfg(), backend,
                            on_progress=lambda b, s, loss, n: seen.append((b, s, n)))
    controller.run()
    said = [r.getMessage() for r in caplog.records if "was restarted" in r.getMessage()]
    assert said == ["block 1: its process was restarted (1 of train.max_restarts=3 in this "
                    "run) and went on from its checkpoint of step 8; now at step 8"]
    assert (1, 4, before) in seen and (1, 8, before + 1) in seen
    assert all(n == before for b, _, n in seen if b == 0)  # restarted in earlier runs only


@pytest.mark.parametrize("before", [0, 2])
def test_a_restart_before_a_blocks_first_report_is_said_when_earlier_counts_are_known(
        caplog, before: int) -> None:
    backend = FakeBackend(steps=10, restarted_at={1: 4}, restarts_before=before)
    seen: list[tuple] = []
    Controller(_cfg(), backend, on_progress=lambda b, s, loss, n: seen.append((b, s, n)),
               restarts_before=[before, before]).run()
    said = [r.getMessage() for r in caplog.records if "was restarted" in r.getMessage()]
    assert said == ["block 1: its process was restarted (1 of train.max_restarts=3 in this "
                    "run) and went on from its checkpoint of step 4; now at step 4"]
    assert (1, 4, before + 1) in seen


def test_a_restart_before_any_checkpoint_is_said_to_start_over(caplog) -> None:
    backend = FakeBackend(steps=10, restarted_at={1: 4})
    backend.resumed_from = 0  # its process died before it saved a checkpoint
    Controller(_cfg(), backend, restarts_before=[0, 0]).run()
    said = [r.getMessage() for r in caplog.records if "was restarted" in r.getMessage()]
    assert said == ["block 1: its process was restarted (1 of train.max_restarts=3 in this "
                    "run) and started over (no checkpoint yet); now at step 4"]


def test_a_rerun_of_blocks_restarted_before_says_nothing_of_it(caplog) -> None:
    Controller(_cfg(), FakeBackend(steps=10, restarts_before=1)).run()
    assert "was restarted" not in caplog.text


@pytest.mark.parametrize("error", [
    OSError(28, "No space left on device"),
    RuntimeError("[Errno 122] Disk quota exceeded: 'run/blocks/block_1/state_00000020.pt'"),
], ids=["oserror", "its-message"])  # as raised, and as a block process's error reached here
def test_a_full_disk_fails_the_run_saying_what_to_do(error: Exception) -> None:
    backend = FakeBackend(steps=10, fail={1: error})
    with pytest.raises(RunFailed) as failed:
        Controller(_cfg(), backend).run()
    assert str(failed.value) == (
        f"block 1 failed: {error}: free space there (or raise the quota); the checkpoints "
        f"written stay, and the same train command resumes the run")
    backend = FakeBackend(steps=10, fail={1: OSError(13, "Permission denied")})
    with pytest.raises(RunFailed, match=r"^block 1 failed: \[Errno 13\] Permission denied$"):
        Controller(_cfg(), backend).run()


def test_a_block_out_of_memory_fails_the_run_and_one_at_its_start_is_told_what_to_do() -> None:
    from dbparallel.training.out_of_memory import OutOfMemory

    said = "block 1: out of memory taking step 3 on cuda:0 (...): ... trains otherwise"
    backend = FakeBackend(steps=10, fail={1: OutOfMemory(said)})
    with pytest.raises(RunFailed) as failed:
        Controller(_cfg(), backend).run()
    assert str(failed.value) == "block 1 failed: out of memory taking step 3 on cuda:0 " \
                                "(...): ... trains otherwise"  # said once, not restarted
    start = RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total "
                         "capacity of 79.19 GiB of which 1.25 GiB is free.")
    with pytest.raises(RunFailed) as failed:
        Controller(_cfg(), FakeBackend(steps=10, fail={1: start})).run()
    assert str(failed.value) == (
        f"block 1 failed: {start}: the block does not fit in its device's memory (`dbparallel "
        f"plan` with the same recipe shows what it holds): more blocks (model.blocks) make "
        f"smaller ones, in a new run")


def test_a_resumed_run_assembles_at_the_next_multiple_not_at_every_one_it_passed() -> None:
    """Blocks that resume at step 40 with train.assemble_every=8 are assembled at 40, 48 and
    56, not once for each multiple of 8 below 40 as well, back to back on the same
    snapshots."""

    class Resumed(FakeBackend):
        def submit_train(self, block: int, until: int) -> None:
            super().submit_train(block, max(until, 40))  # a block at 40 answers 40 at once

    backend = Resumed(steps=60)
    Controller(_cfg("train.steps=60", "train.assemble_every=8"), backend).run()
    assert backend.calls.count(("assemble", False)) == 3, backend.calls
