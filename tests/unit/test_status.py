"""``dbparallel status``: each block's state read from a real run directory (a block trained
alone with ``--block``, a live lease, a lapsed one, a damaged manifest), as a table and JSON."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from holders import Interleaved

import dbparallel
from dbparallel import cli
from dbparallel.cli_status import _row
from dbparallel.training.checkpoint import BlockCheckpoints
from dbparallel.training.failure import clear_failure, record_failure
from dbparallel.training.holder import driver_session
from dbparallel.training.lease import BlockLease
from dbparallel.training.run_files import run_config
from dbparallel.training.status import run_status
from dbparallel.training.storage import Storage

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "jobs" / "tiny_cpu.yaml")
FAST = ["train.steps=4", "train.checkpoint_every=2", "train.log_every=2", "metrics.port=0"]


@pytest.fixture(scope="module")
def half(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-block run of which only block 0 was trained (4 steps); block 1 never started."""
    run = tmp_path_factory.mktemp("half") / "run"
    assert cli.main(["train", "--local", "--block", "0", TINY, f"run.dir={run}", *FAST]) == 0
    return run


@pytest.fixture
def run(half: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(half, copy)
    return copy


def test_status_stop_and_help_read_without_torch(run: Path) -> None:
    """`dbparallel status`, `stop` and `--help` import no torch (seconds of a command that
    `watch` may run every two)."""
    code = ("import sys\nfrom dbparallel.cli import main\ntry:\n"
            "    main(sys.argv[1:])\n"
            "finally:  # --help exits\n"
            "    assert 'torch' not in sys.modules, 'torch was imported'\n")
    for args in (["--help"], ["status", str(run)], ["status", "--json", str(run)],
                 ["stop", str(run)]):
        out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                             text=True, cwd=ROOT)
        assert out.returncode == 0 and "torch was imported" not in out.stderr, out.stderr
        assert ("usage: dbparallel" if args == ["--help"] else f"{run}") in out.stdout


def test_run_dir_given_as_the_training_commands_take_it(run: Path, capsys) -> None:
    def shown() -> list[list[str]]:  # each line's first columns: not the "Ns ago" ones
        return [line.split()[:4] for line in capsys.readouterr().out.splitlines()]

    assert cli.main(["status", str(run)]) == 0
    plain = shown()
    assert cli.main(["status", f"run.dir={run}"]) == 0
    assert shown() == plain and plain[0] == [f"{run}:", "dit,", "2", "blocks,"]


def test_a_block_trained_alone_is_done_and_the_other_not_started(run: Path, capsys) -> None:
    assert cli.main(["status", str(run)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"{run}: dit, 2 blocks, 1 not started, 1 done"
    assert lines[2].split()[:4] == ["0", "done", "4/4", "4"]
    assert lines[3].split()[:4] == ["1", "not", "started", "0/4"]
    assert "report.json: not yet" in out
    status = dbparallel.status(run)  # the Python API: the same object the command prints
    assert status.state == "1 not started, 1 done"
    trained = status.blocks[0]
    history = [json.loads(line) for line in
               (run / "blocks/block_0/metrics.jsonl").read_text().splitlines()]
    assert trained.logged_step == 4 and trained.loss == history[-1]["loss"]
    assert trained.heldout_loss == [r for r in history if "heldout_loss" in r][-1][
        "heldout_loss"]
    assert status.blocks[1].loss is None and status.blocks[1].checkpoint_step is None


def test_status_names_the_labels_of_the_run_s_metrics(run: Path, capsys) -> None:
    """The run directory's id, drawn by the process that opened it (here `--block 0`), to
    pick the run's series in Prometheus and Grafana; none for a directory without one (trained
    before runs had ids), and a damaged one is named."""
    run_id = (run / "run_id.txt").read_text().strip()
    assert cli.main(["status", str(run)]) == 0
    assert "metrics: this run's series: ray_dbparallel_*" \
        f'{{run="tiny-cpu",run_id="{run_id}"}}' in capsys.readouterr().out.splitlines()
    assert cli.main(["status", "--json", str(run)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["run"], shown["run_id"]) == ("tiny-cpu", run_id)
    (run / "run_id.txt").unlink()
    assert cli.main(["status", str(run)]) == 0
    assert "this run's series" not in capsys.readouterr().out
    assert dbparallel.status(run).run_id is None
    (run / "run_id.txt").write_text("x")
    status = dbparallel.status(run)
    assert status.run_id is None and status.problems[0].startswith(
        f"{run}/run_id.txt: damaged, not readable")


def test_a_live_lease_is_training_and_a_lapsed_one_stopped(run: Path) -> None:
    cfg = run_config(str(run))
    cfg.train.steps = 10  # block 0's checkpoint of step 4 is no longer its last
    storage = Storage(str(run))
    lease = BlockLease(storage, 0, "session-a", cfg.train.lease_timeout_s)
    lease.acquire()
    renewed = storage.read_json("blocks/block_0/lease.json")["renewed_at"]
    live = run_status(storage, cfg, now=renewed + 5).blocks[0]
    assert (live.state, live.writer) == ("training", f"{socket.gethostname()}/{os.getpid()}")
    assert live.lease_age_s == pytest.approx(5)
    lapsed = run_status(storage, cfg, now=renewed + cfg.train.lease_timeout_s + 1)
    assert (lapsed.blocks[0].state, lapsed.blocks[0].writer) == ("stopped", "")
    assert lapsed.state == "1 stopped, 1 not started"
    lease.release()  # a writer that stopped cleanly: stopped at once
    assert run_status(storage, cfg, now=renewed + 5).blocks[0].state == "stopped"
    started = BlockLease(storage, 1, "session-c", cfg.train.lease_timeout_s)
    started.acquire()  # a process that started block 1 and stopped before its first line
    started.release()
    assert run_status(storage, cfg, now=renewed + 5).blocks[1].state == "stopped"
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    dead = BlockLease(storage, 0, "session-b", cfg.train.lease_timeout_s)
    dead.holder = dead.holder.replace(f"/{os.getpid()}/", f"/{ended.stdout.strip()}/")
    dead.acquire()  # as a process of this machine that was killed since would have left it
    gone = run_status(storage, cfg, now=renewed + 5).blocks[0]
    assert (gone.state, gone.writer_alive) == ("stopped", False)
    assert gone.writer == f"{socket.gethostname()}/{ended.stdout.strip()}"
    assert gone.driver == ""  # a --local run's writer is its own driver
    # a Ray run's block process: its driver (this process) is named beside it
    ray_actor = BlockLease(storage, 0, driver_session(), cfg.train.lease_timeout_s)
    ray_actor.holder = ray_actor.holder.replace(f"/{os.getpid()}/", f"/{ended.stdout.strip()}/")
    ray_actor.acquire()
    shown = run_status(storage, cfg, now=renewed + 5).blocks[0]
    assert shown.driver == f"{socket.gethostname()}/{os.getpid()}"
    assert f"{shown.writer} (driver {shown.driver}), renewed " in _row(shown)[-1]


def test_a_lease_lapses_by_its_writer_s_own_timeout(run: Path) -> None:
    """A --block process given train.lease_timeout_s=600 on its command line, while
    config.yaml says 120 (another block's process rewrote it since): its lease, renewed 300 s
    ago, is live; a lease that does not record its writer's timeout lapses by config.yaml's."""
    cfg = run_config(str(run))
    cfg.train.steps = 10  # block 0's checkpoint of step 4 is no longer its last
    assert cfg.train.lease_timeout_s == 120
    storage = Storage(str(run))
    BlockLease(storage, 0, "session-a", 600.0).acquire()
    lease = storage.read_json("blocks/block_0/lease.json")
    assert lease["timeout_s"] == 600
    renewed = lease["renewed_at"]
    live = run_status(storage, cfg, now=renewed + 300).blocks[0]
    assert (live.state, live.lease_age_s) == ("training", pytest.approx(300))
    assert run_status(storage, cfg, now=renewed + 601).blocks[0].state == "stopped"
    del lease["timeout_s"]  # as a writer of an earlier version wrote it
    storage.write_json("blocks/block_0/lease.json", lease)
    assert run_status(storage, cfg, now=renewed + 300).blocks[0].state == "stopped"
    assert run_status(storage, cfg, now=renewed + 100).blocks[0].state == "training"


def test_a_block_whose_driver_still_runs_is_held_as_a_rerun_is_refused(run: Path) -> None:
    """A Ray block's process is gone while its run's driver runs on (assembling, training
    other blocks, starting it again): status says the driver holds it, however old its lease,
    as the lease refuses a rerun; once the driver has ended, both let the block go."""
    from dbparallel.cli_status import render
    from dbparallel.errors import RunDirError
    from dbparallel.training.holder import process_space

    cfg = run_config(str(run))
    cfg.train.steps = 10  # block 0's checkpoint of step 4 is no longer its last
    storage = Storage(str(run))
    actor = subprocess.Popen([sys.executable, "-c", "pass"])
    actor.wait()
    driver = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        session = f"0123abcd@{socket.gethostname()}:{driver.pid}"
        storage.write_json("blocks/block_0/lease.json", {
            "generation": 1, "session": session, "renewed_at": 0.0,  # renewed long ago
            "holder": f"{session}/{socket.gethostname()}/{actor.pid}/0123abcd/"
                      f"{process_space()}"})
        status = run_status(storage, cfg)
        held = status.blocks[0]
        assert (held.state, held.writer_alive) == ("held by its driver", False)
        assert (held.writer, held.driver) == (f"{socket.gethostname()}/{actor.pid}",
                                              f"{socket.gethostname()}/{driver.pid}")
        assert status.state == "1 held by its driver, 1 not started"
        assert f"block 0: its process is gone, but its run's driver (pid {driver.pid} on " \
               f"{socket.gethostname()}) still runs on this machine" in render(status)
        with pytest.raises(RunDirError, match="whose driver still runs on this machine"):
            BlockLease(storage, 0, "rerun", cfg.train.lease_timeout_s).acquire()
    finally:
        driver.kill()
        driver.wait()
    assert run_status(storage, cfg).blocks[0].state == "stopped"
    BlockLease(storage, 0, "rerun", cfg.train.lease_timeout_s).acquire()  # let go


def test_a_damaged_block_is_named_and_the_others_still_read(run: Path, capsys) -> None:
    (run / "blocks/block_0/manifest.json").write_text("{")
    (run / "blocks/block_1").mkdir(parents=True, exist_ok=True)
    assert cli.main(["status", str(run), "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    first, second = found["blocks"]
    assert first["state"] == "damaged" and "manifest.json" in first["problem"]
    assert first["problem"].endswith("restore it from a copy, or train with "
                                     "train.on_unreadable=restart to discard the block's "
                                     "checkpoints and train it again from step 0")
    assert second["state"] == "not started" and second["problem"] == ""
    assert found["state"] == "1 not started, 1 damaged" and found["report"] is False
    assert cli.main(["status", str(run)]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[2].split()[:2] == ["0", "damaged"] and "manifest.json" not in shown[2]
    assert [line for line in shown if line.startswith("block 0: ")] == [
        f"block 0: {first['problem']}"]  # below the table, which stays narrow


def test_a_block_that_failed_says_why_until_it_trains_again(run: Path, capsys) -> None:
    assert cli.main(["train", "--local", "--block", "1", TINY, f"run.dir={run}", *FAST,
                     "train.lr=1e30", "train.nonfinite=stop", "train.log_every=1"]) == 1
    capsys.readouterr()
    status = dbparallel.status(run)
    failed = status.blocks[1]
    assert (status.state, failed.state, failed.failed_step) == ("1 failed, 1 done", "failed", 2)
    assert failed.failure == \
        "NonFiniteLoss: block 1: loss is inf taking step 2 (train.nonfinite=stop)"
    assert failed.logged_step == 1 and failed.failed_age_s is not None
    assert cli.main(["status", str(run)]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[3].split()[:3] == ["1", "failed", "1/4"]
    assert shown[-1].startswith("block 1 failed taking step 2 (") and shown[-1].endswith(
        f"ago): {failed.failure}")
    assert cli.main(["train", "--local", "--block", "1", TINY, f"run.dir={run}", *FAST]) == 0
    assert not (run / "blocks" / "block_1" / "failed.json").exists()
    assert dbparallel.status(run).state == "trained, not yet assembled"


def test_a_resume_says_where_each_block_goes_on(run: Path, capsys) -> None:
    from dbparallel.training.resume import resume_line

    assert cli.main(["train", "--local", TINY, f"run.dir={run}", *FAST,
                     "train.steps=6"]) == 0
    out = capsys.readouterr().out
    assert f"resuming {run} (6 steps a block): block 0 at step 4, block 1 from the start\n" in out
    cfg = run_config(str(run))  # now: both blocks at step 6
    assert resume_line(Storage(str(run)), cfg, [0, 1]) == \
        f"resuming {run} (6 steps a block): blocks 0-1 at step 6 (done)"
    cfg.train.block_steps = [6, 9]
    assert resume_line(Storage(str(run)), cfg, [0, 1]) == \
        f"resuming {run}: block 0 at step 6 of 6 (done), block 1 at step 6 of 9"
    fresh = run.parent / "fresh"
    assert resume_line(Storage(str(fresh)), cfg, [0, 1]) is None and not fresh.exists()


def test_a_block_trained_past_a_lowered_train_steps_is_done_past_them(run: Path,
                                                                      capsys) -> None:
    """A rerun with a lower train.steps trains block 0 (at step 4) no more: status and the
    resume line say it is done past the steps asked, never "4/2"."""
    from dbparallel.training.resume import resume_line

    assert cli.main(["train", "--local", "--block", "0", TINY, f"run.dir={run}", *FAST,
                     "train.steps=2"]) == 0
    capsys.readouterr()
    assert cli.main(["status", str(run)]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[2].split()[:5] == ["0", "done", "4", "(past", "2)"]
    assert shown[3].split()[:4] == ["1", "not", "started", "0/2"]
    assert "block 0: done at step 4, past the 2 steps asked now (train.steps, " \
           "train.block_steps): it trains no more, and its weights are those of step 4" in shown
    assert "/" not in "".join(shown[2].split()[2:5])
    cfg = run_config(str(run))
    assert resume_line(Storage(str(run)), cfg, [0, 1]) == \
        f"resuming {run} (2 steps a block): block 0 at step 4 (done, past 2), block 1 from " \
        f"the start"
    cfg.train.block_steps = [2, 9]
    assert resume_line(Storage(str(run)), cfg, [0, 1]) == \
        f"resuming {run}: block 0 at step 4 (done, past 2), block 1 from the start of 9"


def test_a_block_that_failed_at_its_start_says_so(run: Path, capsys) -> None:
    for state in (run / "blocks" / "block_0").glob("state_*.pt"):
        state.write_bytes(b"not a checkpoint")
    assert cli.main(["train", "--local", "--block", "0", TINY, f"run.dir={run}", *FAST,
                     "train.steps=8"]) == 2
    capsys.readouterr()
    failed = dbparallel.status(run).blocks[0]
    assert (failed.state, failed.failed_step) == ("failed", None)
    assert failed.failure.startswith("RunDirError: block 0: none of its checkpoints can be read")
    assert cli.main(["status", str(run)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("block 0 failed at its start (")


def test_a_passing_error_is_recorded_until_the_block_is_asked_to_go_on(tmp_path: Path) -> None:
    from dbparallel.config import load_config
    from dbparallel.data.sources import open_data
    from dbparallel.errors import DataUnreachable
    from dbparallel.training.loop import BlockRun

    cfg = load_config([TINY], [f"run.dir={tmp_path / 'run'}", "train.steps=4"])
    storage = Storage(cfg.run_dir)
    run = BlockRun(cfg, 0, open_data(cfg.data), storage, prefetch=False)
    try:
        read = run.batch
        run.batch = lambda step: (_ for _ in ()).throw(DataUnreachable("bucket out of reach"))
        with pytest.raises(DataUnreachable):
            run.train_until(2)
        record = storage.read_json("blocks/block_0/failed.json")
        assert (record["step"], record["type"]) == (1, "DataUnreachable")
        run.batch = read  # the store is back: the driver asks the block again
        run.train_until(2)
        assert run.trainer.step == 2 and not storage.exists("blocks/block_0/failed.json")
    finally:
        run.close()


def test_an_error_after_a_step_is_recorded_at_that_step(tmp_path: Path) -> None:
    """A checkpoint that cannot be written after step 2 is step 2's failure, not step 3's
    (which never started); an error in a step is that step's."""
    from dbparallel.config import load_config
    from dbparallel.data.sources import open_data
    from dbparallel.training.loop import BlockRun

    cfg = load_config([TINY], [f"run.dir={tmp_path / 'run'}", "train.steps=4",
                               "train.checkpoint_every=2"])
    storage = Storage(cfg.run_dir)
    run = BlockRun(cfg, 0, open_data(cfg.data), storage, prefetch=False)
    try:
        saved = run.checkpoints.save
        run.checkpoints.save = lambda *a: (_ for _ in ()).throw(OSError("disk full"))
        with pytest.raises(OSError):
            run.train_until(4)
        record = storage.read_json("blocks/block_0/failed.json")
        assert (record["step"], record["type"], run.trainer.step) == (2, "OSError", 2)
        assert record["taken"] is True  # step 2 was taken: it failed after it
        run.checkpoints.save = saved
        run.batch = lambda step: (_ for _ in ()).throw(RuntimeError("bad batch"))
        with pytest.raises(RuntimeError):
            run.train_until(4)
        record = storage.read_json("blocks/block_0/failed.json")
        assert (record["step"], record["taken"]) == (3, False)
    finally:
        run.close()


def test_a_failure_says_whether_it_came_taking_its_step_or_after_it(run: Path,
                                                                     capsys) -> None:
    """Beside the table's step (the steps done): a block that failed on its first batch failed
    taking step 1 (0 done), one that failed writing step 2's checkpoint after step 2."""
    from dbparallel.training.failure import record_failure

    storage = Storage(str(run))  # block 1 never started
    record_failure(storage, 1, 1, RuntimeError("bad batch"))
    assert cli.main(["status", str(run)]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[3].split()[:3] == ["1", "failed", "0/4"]
    assert shown[-1].startswith("block 1 failed taking step 1 (")
    record_failure(storage, 1, 2, OSError("disk full"), taken=True)
    assert dbparallel.status(run).blocks[1].failed_after is True
    assert cli.main(["status", str(run)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("block 1 failed after step 2 (")


def test_an_error_after_the_driver_ended_the_run_is_no_failure(tmp_path: Path) -> None:
    """The driver releases its blocks' leases before it stops their processes: what the stop
    causes (a replica's collective cut short) is not recorded as the block's failure."""
    from dbparallel.config import load_config
    from dbparallel.data.sources import open_data
    from dbparallel.training.loop import BlockRun
    from dbparallel.training.session_lease import release_session

    cfg = load_config([TINY], [f"run.dir={tmp_path / 'run'}", "train.steps=4"])
    storage = Storage(cfg.run_dir)
    run = BlockRun(cfg, 0, open_data(cfg.data), storage, prefetch=False, session="driver-a")
    try:
        release_session(storage, [0], "driver-a")
        run.batch = lambda step: (_ for _ in ()).throw(RuntimeError("connection closed by peer"))
        with pytest.raises(RuntimeError):
            run.train_until(2)
        assert not storage.exists("blocks/block_0/failed.json")
    finally:
        run.close()


def test_the_driver_records_a_block_lost_after_it_resumed_at_its_checkpoint(run: Path) -> None:
    from dbparallel.runtime.backend import BlockLost
    from dbparallel.training.failure import record_given_up

    storage = Storage(str(run))  # block 0 has a checkpoint of step 4; block 1 none
    record_given_up(storage, 0, 1, BlockLost("its process was lost"))  # before its report
    record_given_up(storage, 1, 1, BlockLost("its process was lost"))
    cfg = run_config(str(run))
    cfg.train.steps = 10
    assert [b.failed_step for b in run_status(storage, cfg).blocks] == [5, 1]


def test_the_driver_records_an_error_a_replica_met_at_its_start_there(run: Path) -> None:
    """Not at the step after the block's newest checkpoint (4): at its start."""
    from dbparallel.errors import DataError
    from dbparallel.training.failure import record_given_up

    record_given_up(Storage(str(run)), 0, None, DataError("data.path: not there on node-2"))
    cfg = run_config(str(run))
    cfg.train.steps = 10
    assert run_status(Storage(str(run)), cfg).blocks[0].failed_step is None


def test_the_driver_leaves_a_block_a_rerun_took_since_it_gave_it_up(tmp_path: Path) -> None:
    """A driver records the blocks it gave up as it ends; a rerun that took a block in the
    meantime keeps it, and no stale record of the earlier run lands on it."""
    from dbparallel.runtime.backend import BlockLost
    from dbparallel.training.failure import record_given_up
    from dbparallel.training.lease import BlockLease
    from dbparallel.training.session_lease import release_session

    storage = Storage(str(tmp_path / "run"))
    BlockLease(storage, 0, "driver-a", 60.0).acquire()
    release_session(storage, [0], "driver-a")  # the first run ends its session
    rerun = BlockLease(storage, 0, "driver-b", 60.0)
    rerun.acquire()  # the rerun takes the block
    record_given_up(storage, 0, 3, BlockLost("its process was lost"), "driver-a")
    assert not storage.exists("blocks/block_0/failed.json")
    rerun.release()
    record_given_up(storage, 1, 3, BlockLost("its process was lost"), "driver-a")  # no lease
    record_given_up(storage, 0, 3, BlockLost("its process was lost"), "driver-b")  # its own
    assert storage.exists("blocks/block_1/failed.json")
    assert storage.read_json("blocks/block_0/failed.json")["step"] == 3


def test_a_damaged_failure_record_is_named(run: Path) -> None:
    (run / "blocks/block_1").mkdir(parents=True, exist_ok=True)
    (run / "blocks/block_1/failed.json").write_text('{"error": 3}')
    damaged = dbparallel.status(run).blocks[1]
    assert damaged.state == "damaged" and "failed.json: not a failure record" in damaged.problem


def test_a_finished_run_and_a_missing_one(run: Path, tmp_path: Path, capsys) -> None:
    assert cli.main(["train", "--local", TINY, f"run.dir={run}", *FAST]) == 0  # the rest
    capsys.readouterr()
    assert cli.main(["status", str(run), "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["state"] == "finished" and found["report"] is True
    assert [b["checkpoint_step"] for b in found["blocks"]] == [4, 4]
    report = json.loads((run / "report.json").read_text())["assembly"]
    assert found["assembly"]["sample_accuracy"] == report["sample_accuracy"]
    assert cli.main(["status", str(run)]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[0] == f"{run}: dit, 2 blocks, finished"
    assert shown[-2].startswith("latest assembly (step 4): sample_accuracy ")
    assert shown[-1].startswith("report.json: written ")
    assert cli.main(["status", str(tmp_path / "nothing")]) == 2
    assert f"{tmp_path / 'nothing'}: no such directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli.main(["status", str(tmp_path / "empty")]) == 2
    assert capsys.readouterr().err.rstrip().endswith(
        "empty: not a run directory (no config.yaml)")
    # a folder in a run directory, and one that holds run directories, say where they are
    assert cli.main(["status", str(run / "blocks" / "block_0")]) == 2
    assert capsys.readouterr().err.rstrip().endswith(
        f"block_0: not a run directory (no config.yaml); it is inside the run directory {run}")
    assert cli.main(["status", str(run.parent)]) == 2
    assert capsys.readouterr().err.rstrip().endswith(
        f"; it holds the run directories {run}")
    export = tmp_path / "run.safetensors"  # a file, e.g. an export: named as a file
    export.write_bytes(b"not a directory")
    for command in (["status", str(export)], ["plot", str(export)],
                    ["plot", str(run), "--against", str(export)]):
        assert cli.main(command) == 2
        assert capsys.readouterr().err.rstrip().endswith(
            f"{export}: is a file, not a run directory (an export file holds the network "
            f"alone, for load, eval, sample, generate and predict; this reads a run "
            f"directory's training files)"), command


def test_a_damaged_report_is_named_instead_of_its_age(run: Path, capsys) -> None:
    """report.json there but not readable: status names it and what writes it again, as it
    names a damaged manifest (exit 0), and the run is not finished."""
    from dbparallel.training.status import BlockStatus, RunStatus

    remedy = ("run the command that trained the run again (`dbparallel train` without "
              "--block, or `dbparallel baseline`): it trains what is left, assembles the blocks "
              "and writes report.json again")
    (run / "report.json").write_text('{"per_block": [')
    assert cli.main(["status", str(run)]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[-1].startswith(f"{run / 'report.json'}: damaged, not readable (Expecting ")
    assert shown[-1].endswith(f"); {remedy}")
    assert not any(line.startswith("report.json: written") for line in shown)
    (run / "report.json").write_text("[]")  # JSON, but no report
    assert cli.main(["status", str(run), "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert (found["report"], found["report_age_s"]) == (False, None)
    assert found["report_problem"] == (
        f'{run / "report.json"}: damaged, not readable (expected {{"per_block": [...], '
        f'"assembly": {{...}}, ...}}); {remedy}')
    done = [BlockStatus(0, "done", 4, checkpoint_step=4)]
    assert RunStatus(str(run), "dit", done, report_problem="damaged").state == \
        "trained, report.json damaged"


def test_bytes_of_an_assembly_read_as_bytes() -> None:
    from dbparallel.cli_status import render
    from dbparallel.training.status import RunStatus

    shown = render(RunStatus("runs/x", "looped", [], assembly={
        "step": 10, "bpc": 3.25, "train_memory_bytes_bptt": 6.569e7}))
    assert "latest assembly (step 10): bpc 3.25, train_memory_bytes_bptt 62.6 MiB" in shown


def test_a_damaged_lease_file_does_not_replace_the_block_s_own_error(tmp_path: Path,
                                                                     caplog) -> None:
    from dbparallel.config import load_config
    from dbparallel.data.sources import open_data
    from dbparallel.training.loop import BlockRun

    cfg = load_config([TINY], [f"run.dir={tmp_path / 'run'}", "train.steps=4"])
    storage = Storage(cfg.run_dir)
    run = BlockRun(cfg, 0, open_data(cfg.data), storage, prefetch=False)
    (tmp_path / "run" / "blocks" / "block_0" / "lease.json").write_text("{")
    run.batch = lambda step: (_ for _ in ()).throw(RuntimeError("bad batch"))
    with pytest.raises(RuntimeError, match="bad batch"):
        try:
            run.train_until(2)
        finally:
            run.close()  # the way out: the lease cannot be read, released or recorded
    assert "could not release its write lease" in caplog.text


def _at_every_read(copy: Callable[[int], Path], then: Callable[[Storage], None],
                   status: Callable[[Storage], Any]) -> list[Any]:
    """``status`` of a fresh ``copy(n)`` of a run directory for n = 0, 1, ..., with
    ``then(storage)``, a writer's step, run just before the n-th read of that status; until
    one status makes fewer reads."""
    seen = []
    for n in itertools.count():
        storage = Interleaved(str(copy(n)), n, then)
        seen.append(status(storage))
        if storage.reads <= n:
            return seen


def test_a_block_read_as_its_writer_finishes_it_is_training_or_done(run: Path,
                                                                    tmp_path: Path) -> None:
    """The writer saves the block's last checkpoint, then releases its lease, while status
    reads the block's files: it used to read the manifest first and the lease last, so a
    block read across the two writes had no last checkpoint and no writer: ``stopped``."""
    cfg = run_config(str(run))
    cfg.train.steps = 6  # block 0 (checkpoint of step 4) trains on, to step 6
    leases = {}

    def copy(n: int) -> Path:
        shutil.copytree(run, tmp_path / str(n))
        leases[n] = BlockLease(Storage(str(tmp_path / str(n))), 0, "session-a",
                               cfg.train.lease_timeout_s)
        leases[n].acquire()
        return tmp_path / str(n)

    def finish(storage: Storage) -> None:
        BlockCheckpoints(storage, 0).save("state", 6, {"step": 6})
        leases[int(Path(storage.root).name)].release()

    states = _at_every_read(copy, finish, lambda s: run_status(s, cfg).blocks[0].state)
    assert len(states) > 3 and states[-1] == "training" and states[0] == "done"
    assert set(states) == {"training", "done"}, states


def test_a_failed_block_read_as_a_rerun_takes_it_is_failed_or_training(run: Path,
                                                                       tmp_path: Path) -> None:
    """A rerun takes the failed block's lease, then removes its failed.json, while status
    reads the block: never ``stopped``, and failed.json gone between status's look and its
    read is no traceback."""
    cfg = run_config(str(run))
    cfg.train.steps = 6

    def copy(n: int) -> Path:
        shutil.copytree(run, tmp_path / str(n))
        record_failure(Storage(str(tmp_path / str(n))), 0, 5, RuntimeError("bad batch"))
        return tmp_path / str(n)

    def rerun(storage: Storage) -> None:
        BlockLease(storage, 0, "session-b", cfg.train.lease_timeout_s).acquire()
        clear_failure(storage, 0)

    states = _at_every_read(copy, rerun, lambda s: run_status(s, cfg).blocks[0].state)
    assert len(states) > 3 and states[-1] == "failed" and states[0] == "training"
    assert set(states) == {"failed", "training"}, states


def test_a_lease_deleted_as_status_reads_it_is_no_traceback(run: Path, tmp_path: Path) -> None:
    """lease.json deleted (as a refusal says to, where its holder cannot be asked) between
    status's look and its read: the block is read without it."""
    cfg = run_config(str(run))
    cfg.train.steps = 6

    def copy(n: int) -> Path:
        shutil.copytree(run, tmp_path / str(n))
        BlockLease(Storage(str(tmp_path / str(n))), 0, "session-a",
                   cfg.train.lease_timeout_s).acquire()
        return tmp_path / str(n)

    states = _at_every_read(copy, lambda s: s.delete("blocks/block_0/lease.json"),
                            lambda s: run_status(s, cfg).blocks[0].state)
    assert states[0] == "stopped" and states[-1] == "training"
    assert set(states) == {"stopped", "training"}, states


def test_a_block_past_a_lowered_train_steps_with_a_live_writer_is_training(run: Path) -> None:
    """Another ``--block`` process lowered train.steps in config.yaml while block 0's writer,
    given more steps, trains on: the block is training, not done "past" them."""
    cfg = run_config(str(run))
    cfg.train.steps = 2  # block 0 has a checkpoint of step 4
    storage = Storage(str(run))
    lease = BlockLease(storage, 0, "session-a", cfg.train.lease_timeout_s)
    lease.acquire()
    renewed = storage.read_json("blocks/block_0/lease.json")["renewed_at"]
    assert run_status(storage, cfg, now=renewed + 1).blocks[0].state == "training"
    lease.release()
    assert run_status(storage, cfg, now=renewed + 1).blocks[0].state == "done"


def test_counts_of_an_assembly_read_as_whole_numbers() -> None:
    from dbparallel.cli_status import render
    from dbparallel.training.status import RunStatus

    shown = render(RunStatus("runs/x", "dit", [], assembly={
        "step": 400, "fd_indomain": 88.74317, "eval_rows": 10000, "eval_on_test": 1}))
    assert "latest assembly (step 400): fd_indomain 88.74, eval_rows 10,000, eval_on_test 1" \
        in shown
