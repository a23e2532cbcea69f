"""A Ray block actor's start (runtime/block_actor.py) without Ray: the plain class, with Ray's
answer to "was this actor started again?" given by the test (yes)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import dbparallel
from dbparallel import cli
from dbparallel.config import load_config
from dbparallel.data.sources import open_data
from dbparallel.errors import DataUnreachable, RunDirError, UserError
from dbparallel.runtime import block_actor
from dbparallel.runtime.block_actor import BlockActor
from dbparallel.runtime.metrics import BlockRecorder, MemorySink
from dbparallel.training import loop
from dbparallel.training.data_pin import pin_data
from dbparallel.training.lease import BlockLease
from dbparallel.training.run_dir import open_run
from dbparallel.training.session_lease import release_session
from dbparallel.training.storage import DamagedFile, Storage

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "jobs" / "tiny_cpu.yaml")
SESSION = "run-a"  # the driver's
RUN_ID = "0123456789ab"  # the run directory's, as the driver read it (training/run_id.py)


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A 2-block run whose driver pinned its data; every actor is a restart by Ray."""
    cfg = load_config([TINY], [f"run.dir={tmp_path / 'run'}", "train.steps=4"])
    pin_data(open_run(cfg), open_data(cfg.data))
    restarted = SimpleNamespace(was_current_actor_reconstructed=True)
    monkeypatch.setattr(block_actor.ray, "get_runtime_context", lambda: restarted)
    monkeypatch.setattr(block_actor, "BlockRecorder",
                        lambda *args: BlockRecorder(*args, MemorySink()))
    return cfg


def test_a_data_index_an_actor_cannot_read_is_its_block_s_failure_at_its_start(
        cfg, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Refused while another process holds the block, the actor writes nothing there; once it
    holds the block, the damaged index is recorded as the block's failure at its start and
    Ray's restart of it is counted, as after a failure in training."""
    run = tmp_path / "run"
    block = run / "blocks" / "block_1"
    (run / "data_index.json").write_text('{"source": ')  # cut short
    other = BlockLease(Storage(cfg.run_dir), 1, "run-b", 3600.0)  # e.g. `train --local --block 1`
    other.acquire()
    lease = (block / "lease.json").read_text()
    refused = BlockActor(cfg, 1, SESSION, RUN_ID)
    with pytest.raises(RunDirError, match="block 1 is being trained by another process"):
        refused.train(2)
    assert (block / "lease.json").read_text() == lease  # the holder's, untouched
    assert not (block / "failed.json").exists() and not (block / "restarts.json").exists()
    other.release()

    actor = BlockActor(cfg, 1, SESSION, RUN_ID)
    with pytest.raises(DamagedFile, match="data_index.json: damaged"):
        actor.train(2)
    record = json.loads((block / "failed.json").read_text())
    assert (record["step"], record["type"]) == (None, "DamagedFile")
    assert json.loads((block / "restarts.json").read_text())["restarts"] == 1
    assert json.loads((block / "lease.json").read_text())["session"] == SESSION  # still held
    release_session(Storage(cfg.run_dir), [0, 1], SESSION)  # the driver ends the failed run
    failed = dbparallel.status(run).blocks[1]
    assert (failed.state, failed.failed_step) == ("failed", None)
    assert cli.main(["status", str(run)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith(
        "block 1 failed at its start (")


def test_a_start_tried_again_after_a_passing_error_counts_its_restart_once(
        cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Data out of reach at the start: recorded until the driver asks again, and the start
    that then succeeds is the same process's, not another restart."""
    block = tmp_path / "run" / "blocks" / "block_1"
    read = loop.run_data
    outcomes = [DataUnreachable("s3: throttled"), None]

    def run_data(*args):
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome
        return read(*args)

    monkeypatch.setattr(loop, "run_data", run_data)
    actor = BlockActor(cfg, 1, SESSION, RUN_ID)
    assert isinstance(actor.failed, DataUnreachable)
    record = json.loads((block / "failed.json").read_text())
    assert (record["step"], record["type"]) == (None, "DataUnreachable")
    assert actor.train(2)["step"] == 2  # started at this call, then trained
    assert not outcomes and not (block / "failed.json").exists()
    assert actor.restarts == 1
    assert json.loads((block / "restarts.json").read_text())["restarts"] == 1
    # its metrics go on under the run's labels, its counter at the run's restarts so far
    labels = {"run": "tiny-cpu", "run_id": RUN_ID, "block": "1"}
    assert actor.recorder.sink.get("dbparallel_block_restarts", **labels) == 1
    assert actor.recorder.sink.get("dbparallel_block_steps", **labels) == 2


def test_a_gpu_asked_for_and_not_here_is_its_block_s_failure_at_its_start(
        cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The device is chosen once the actor holds the block: a node without the GPU the run
    asks for leaves the block `failed` with the key to change, not `stopped`."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg.runtime.gpus_per_block = 1
    actor = BlockActor(cfg, 1, SESSION, RUN_ID)
    with pytest.raises(UserError, match=r"runtime\.gpus_per_block=1 asks for a GPU"):
        actor.train(2)
    block = tmp_path / "run" / "blocks" / "block_1"
    record = json.loads((block / "failed.json").read_text())
    assert (record["step"], record["type"]) == (None, "UserError")
    assert json.loads((block / "restarts.json").read_text())["restarts"] == 1
    release_session(Storage(cfg.run_dir), [0, 1], SESSION)  # the driver ends the failed run
    failed = dbparallel.status(tmp_path / "run").blocks[1]
    assert (failed.state, failed.failed_step) == ("failed", None)
    assert "runtime.gpus_per_block=1" in failed.failure
