"""A replica group's rank 0 as Ray Train runs it (runtime/replica_worker.py), without Ray: on
a gloo process group of its own, posting its messages on a list."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import dbparallel
from dbparallel.config import load_config
from dbparallel.data.sources import open_data
from dbparallel.errors import DataError, UserError
from dbparallel.runtime.metrics import MemorySink
from dbparallel.runtime.replica_worker import run_replica
from dbparallel.training import loop
from dbparallel.training.data_pin import pin_data
from dbparallel.training.lease import BlockLease, LeaseLost
from dbparallel.training.replicas import Replicas
from dbparallel.training.run_dir import open_run
from dbparallel.training.session_lease import release_session
from dbparallel.training.storage import DamagedFile, Storage

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "jobs" / "tiny_cpu.yaml")
SESSION = "run-a"  # the driver's: every incarnation of the group runs in it
RUN_ID = "0123456789ab"  # the run directory's, as the driver read it (training/run_id.py)


class Queue(list):
    """What the driver would drain: (kind, block, payload) messages."""

    def put(self, message: tuple) -> None:
        self.append(message)

    def kinds(self) -> list[str]:
        return [kind for kind, _, _ in self]


@pytest.fixture
def group():
    """A process group of one, where rank 0 of two sums with itself alone."""
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield Replicas(0, 2)
    dist.destroy_process_group()


@pytest.fixture
def cfg(tmp_path: Path):
    cfg = load_config([TINY], [f"run.dir={tmp_path / 'run'}", "train.steps=8"])
    pin_data(open_run(cfg), open_data(cfg.data))
    return cfg


def _rank0(cfg, replicas: Replicas, queue: Queue) -> MemorySink:
    """Rank 0 trains block 1; the metrics it recorded."""
    sink = MemorySink()
    run_replica(cfg, 1, SESSION, RUN_ID, queue, replicas, "cpu", "rank 0", sink)
    return sink


def test_a_rank_0_fenced_off_by_a_newer_group_stops_without_failing_the_run(
        cfg, group, tmp_path: Path) -> None:
    queue = Queue()
    newer = BlockLease(open_run(cfg), 1, SESSION, cfg.train.lease_timeout_s)

    def put(message: tuple) -> None:
        queue.append(message)
        if message[0] == "start":  # a newer incarnation of the group takes the block over
            newer.acquire()

    queue.put = put  # type: ignore[method-assign]
    with pytest.raises(LeaseLost):  # at its first history line, before it writes it
        _rank0(cfg, group, queue)
    assert queue.kinds() == ["start"]  # no error: the newer group owns the block
    block = tmp_path / "run" / "blocks" / "block_1"
    lease = json.loads((block / "lease.json").read_text())
    assert lease["holder"] == newer.holder and lease["generation"] == 2
    assert not (block / "failed.json").exists() and not (block / "metrics.jsonl").exists()


def test_a_data_index_rank_0_cannot_read_is_its_block_s_failure_at_its_start(
        cfg, group, tmp_path: Path) -> None:
    """Read once rank 0 holds the block: recorded as the block's failure at its start, and
    posted with no step; the lease stays held, as after a failure in training."""
    run = tmp_path / "run"
    (run / "data_index.json").write_text('{"source": ')  # cut short
    queue = Queue()
    with pytest.raises(DamagedFile, match="data_index.json: damaged"):
        _rank0(cfg, group, queue)
    assert [(kind, payload["rank"], payload["step"]) for kind, _, payload in queue] == [
        ("error", 0, None)]
    block = run / "blocks" / "block_1"
    record = json.loads((block / "failed.json").read_text())
    assert (record["step"], record["type"]) == (None, "DamagedFile")
    assert json.loads((block / "lease.json").read_text())["session"] == SESSION
    release_session(Storage(cfg.run_dir), [0, 1], SESSION)  # the driver ends the failed run
    failed = dbparallel.status(run).blocks[1]
    assert (failed.state, failed.failed_step) == ("failed", None)
    assert failed.failure.startswith("DamagedFile: ") and "data_index.json" in failed.failure


def _failing(monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    def fail(*_args, **_kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    if where == "in-block-run":  # after the lease is taken: while resuming
        monkeypatch.setattr(loop, "resume", fail)
    else:  # reading the pinned data index, once the lease is taken
        monkeypatch.setattr(loop, "run_data", fail)


@pytest.mark.parametrize("where", ["in-block-run", "reading-data"])
def test_every_failed_start_of_rank_0_counts_a_restart(cfg, group, tmp_path: Path,
                                                        where: str) -> None:
    for _ in range(2):  # Ray Train starts the group again after each
        queue = Queue()
        with pytest.MonkeyPatch.context() as mp:
            _failing(mp, where)
            with pytest.raises(RuntimeError, match="illegal memory access"):
                _rank0(cfg, group, queue)
        assert queue.kinds() == []  # not bad input: the run goes on
    queue = Queue()
    sink = _rank0(cfg, group, queue)
    messages = {kind: payload for kind, _, payload in queue}
    assert messages["start"]["restarts"] == 2
    labels = {"run": "tiny-cpu", "run_id": RUN_ID, "block": "1"}  # the run's, as every group's
    assert sink.get("dbparallel_block_restarts", **labels) == 2
    assert sink.get("dbparallel_block_steps", **labels) == 8
    assert messages["summary"]["restarts"] == 2 and messages["summary"]["steps"] == 8
    block = tmp_path / "run" / "blocks" / "block_1"
    assert json.loads((block / "restarts.json").read_text())["restarts"] == 2
    assert json.loads((block / "lease.json").read_text())["holder"] == ""  # released at its end


@pytest.mark.parametrize("rank", [0, 1])
def test_a_bad_row_any_rank_meets_is_posted_with_its_rank_and_step(
        cfg, group, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rank: int) -> None:
    """Rank 0 records the bad row as the block's failure; another rank writes nothing in the
    block's directory and says which step it trained, for the driver to record it."""
    bad = DataError("part-00000.parquet row 7: column 'label' has label 12")
    batch = loop.BlockRun.batch

    def meets_it(run, step: int):
        if step == 2:  # 0-based: the third step
            raise bad
        return batch(run, step)

    monkeypatch.setattr(loop.BlockRun, "batch", meets_it)
    queue = Queue()
    with pytest.raises(DataError):
        run_replica(cfg, 1, SESSION, RUN_ID, queue, Replicas(rank, 2), "cpu",
                    f"rank {rank}", MemorySink())
    assert [(kind, payload) for kind, _, payload in queue if kind == "error"] == [
        ("error", {"error": bad, "rank": rank, "step": 3})]
    failed = tmp_path / "run" / "blocks" / "block_1" / "failed.json"
    if rank == 0:
        assert json.loads(failed.read_text())["step"] == 3
    else:
        assert not failed.exists()


def test_a_gpu_asked_for_and_not_here_is_its_block_s_failure_at_rank_0_s_start(
        cfg, group, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The device is chosen once rank 0 holds the block: recorded at its start, and posted
    as bad input with no step (the driver fails the run; Ray Train would meet it again)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg.runtime.gpus_per_block = 1
    queue = Queue()
    with pytest.raises(UserError, match=r"runtime\.gpus_per_block=1 asks for a GPU"):
        _rank0(cfg, group, queue)
    assert [(kind, payload["rank"], payload["step"]) for kind, _, payload in queue] == [
        ("error", 0, None)]
    record = json.loads((tmp_path / "run" / "blocks" / "block_1" / "failed.json").read_text())
    assert (record["step"], record["type"]) == (None, "UserError")
