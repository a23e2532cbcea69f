"""Resume, refusal and bad-input behaviour through the CLI (local mode, no Ray)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from dbparallel.cli import main
from dbparallel.data.tables import image_table, write_table

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "jobs" / "tiny_cpu.yaml")


def _train(run_dir: Path, *overrides: str) -> int:
    return main(["train", TINY, "--local", f"run.dir={run_dir}", "metrics.port=0", *overrides])


def _report(run_dir: Path) -> dict:
    return json.loads((run_dir / "report.json").read_text())


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    assert _train(run_dir) == 0
    return run_dir


def test_rerun_continues_every_block_exactly(straight, tmp_path) -> None:
    run_dir = tmp_path / "run"
    assert _train(run_dir, "train.steps=6") == 0
    first = _report(run_dir)
    assert [r["steps"] for r in first["per_block"]] == [6, 6]
    assert _train(run_dir) == 0  # same command, longer: continues from step 6
    resumed, clean = _report(run_dir), _report(straight)
    # the run directory's id, its metrics' label run_id: kept by the resume, another in
    # another directory of the same run.name
    assert first["run_id"] == resumed["run_id"] == (run_dir / "run_id.txt").read_text().strip()
    assert resumed["run"] == clean["run"] == "tiny-cpu" and clean["run_id"] != resumed["run_id"]
    assert [r["resumed_from"] for r in resumed["per_block"]] == [6, 6]  # not retrained
    assert [r["resumed_from"] for r in clean["per_block"]] == [0, 0]
    assert [r["final_loss"] for r in resumed["per_block"]] == \
        [r["final_loss"] for r in clean["per_block"]]


def test_a_block_another_process_trains_is_refused_before_anything_is_written(
        tmp_path, capsys) -> None:
    """A second driver on a run whose block 0 a live process trains (its lease held): one
    line naming that process, exit 2, and config.yaml not rewritten with the second driver's
    settings; a process for another block of the run goes on."""
    import os

    from dbparallel.training.lease import BlockLease
    from dbparallel.training.storage import Storage

    run_dir = tmp_path / "run"
    assert _train(run_dir, "train.steps=2") == 0
    stored = (run_dir / "config.yaml").read_text()
    lease = BlockLease(Storage(str(run_dir)), 0, "other-run", 120.0)
    lease.acquire()  # this test's own process: live
    capsys.readouterr()
    assert _train(run_dir, "train.steps=2", "train.lr=0.002") == 2
    err = capsys.readouterr().err
    assert f"block 0 is being trained by another process (pid {os.getpid()} on " in err
    assert "Traceback" not in err and (run_dir / "config.yaml").read_text() == stored
    assert main(["train", TINY, "--local", "--block", "1", f"run.dir={run_dir}",
                 "metrics.port=0", "train.steps=4"]) == 0
    lease.release()


def test_changed_network_is_refused_naming_keys(straight, tmp_path, capsys) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(straight, run_dir)
    assert _train(run_dir, "model.hidden=48", "noise.gamma=0.1") == 2
    err = capsys.readouterr().err
    assert "model.hidden" in err and "noise.gamma" in err and "Traceback" not in err
    assert "holds blocks trained with other values" in err
    # a run.dir to give instead, not taken yet: numbered, or named for other data
    assert err.rstrip().endswith(f"choose a new run.dir (e.g. run.dir={run_dir}-2)")
    (tmp_path / "run-2").mkdir()
    assert _train(run_dir, "model.hidden=48") == 2
    assert capsys.readouterr().err.rstrip().endswith(f"(e.g. run.dir={run_dir}-3)")
    pets = _parquet(tmp_path / "pets.parquet", list(range(10)) * 40)
    assert _train(run_dir, "data.source=parquet", f"data.path={pets}") == 2
    assert capsys.readouterr().err.rstrip().endswith(f"(e.g. run.dir={run_dir}-pets)")


def test_a_run_that_saved_nothing_is_refused_saying_so(straight, tmp_path, capsys) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(straight, run_dir)
    shutil.rmtree(run_dir / "blocks")  # as a run that stopped before its first checkpoint
    assert _train(run_dir, "model.hidden=48") == 2
    err = capsys.readouterr().err
    assert "was started with other values of model.hidden" in err
    assert "no block has saved a checkpoint yet" in err and "Traceback" not in err
    assert "model.hidden: 32 there, 48 now" in err
    # another task: named first, with its values, before the differences it brings along
    assert _train(run_dir, "task=vit", "model.patch_size=4", "model.hidden=48") == 2
    err = capsys.readouterr().err
    assert "was started with other values of task, " in err
    assert "(task: 'dit' there, 'vit' now; " in err


def test_missing_block_is_reported_not_skipped(straight, tmp_path, capsys) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(straight, run_dir)
    shutil.rmtree(run_dir / "blocks" / "block_1")
    assert main(["eval", str(run_dir)]) == 2
    assert "block(s) [1] have no snapshot" in capsys.readouterr().err


def test_eval_and_sample_of_a_finished_run(straight, tmp_path, capsys) -> None:
    assert main(["eval", str(straight), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["sample_accuracy"] == _report(straight)["assembly"]["sample_accuracy"]
    out = tmp_path / "grid.png"
    assert main(["sample", str(straight), "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_disagreeing_block_is_refused(straight, tmp_path) -> None:
    from dbparallel.config import load_config
    from dbparallel.errors import RunDirError
    from dbparallel.training.snapshots import load_snapshots
    from dbparallel.training.storage import Storage

    other = load_config([TINY], ["noise.P_mean=-1.0"])
    with pytest.raises(RunDirError, match="noise.P_mean"):
        load_snapshots(other, Storage(str(straight)))


def _parquet(path: Path, labels: list[int], rows: int | None = None) -> str:
    n = len(labels) if rows is None else rows
    images = np.full((n, 1, 8, 8), 0.5, dtype=np.float32)
    write_table(image_table(images, np.array(labels[:n])), str(path))
    return str(path)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: _parquet(d / "bad.parquet", [1, 2, 3, 12]),
             "bad.parquet row 3: column 'label' has label 12"),
        (lambda d: _parquet(d / "empty.parquet", [], rows=0), "empty"),
        (lambda d: str(d / "missing.parquet"), "no such file"),
        (lambda d: "foo://bucket/x.parquet", "cannot reach"),
    ],
)
def test_bad_data_stops_before_training(tmp_path, capsys, make, message) -> None:
    path = make(tmp_path)
    run_dir = tmp_path / "run"
    assert _train(run_dir, "data.source=parquet", f"data.path={path}") == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (run_dir / "blocks").exists()


def test_unknown_data_set_name(tmp_path, capsys) -> None:
    assert _train(tmp_path / "run", "data.source=imagenet") == 2
    assert "data.source" in capsys.readouterr().err


def test_unreadable_checkpoints_refuse_to_start_over(straight, tmp_path, capsys,
                                                     caplog) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(straight, run_dir)
    block = run_dir / "blocks" / "block_1"
    for f in block.glob("state_*.pt"):  # e.g. an object-store lifecycle rule removed them
        f.unlink()
    before = json.loads((block / "manifest.json").read_text())
    assert _train(run_dir, "train.steps=18") == 2
    err = capsys.readouterr().err
    assert "block 1: none of its checkpoints can be read" in err and "state_00000012.pt" in err
    assert "train.on_unreadable=restart" in err
    assert json.loads((block / "manifest.json").read_text()) == before  # nothing touched
    tried = [r.getMessage() for r in caplog.records if "trying an older one" in r.getMessage()]
    assert len(tried) == len(before["state"]) == 2  # each missing file said once


def test_on_unreadable_restart_discards_and_retrains_the_block(straight, tmp_path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(straight, run_dir)
    block = run_dir / "blocks" / "block_1"
    for f in block.glob("state_*.pt"):
        f.write_bytes(b"torn")
    assert _train(run_dir, "train.on_unreadable=restart") == 0
    manifest = json.loads((block / "manifest.json").read_text())
    assert [e["step"] for e in manifest["state"]] == [6, 12]  # retrained, kept, not pruned
    assert all((run_dir / e["file"]).is_file() for e in manifest["state"])
    assert [r["final_loss"] for r in _report(run_dir)["per_block"]] == \
        [r["final_loss"] for r in _report(straight)["per_block"]]


def test_a_resume_from_an_older_checkpoint_keeps_its_new_ones(tmp_path, caplog) -> None:
    run_dir = tmp_path / "run"
    assert _train(run_dir, "train.steps=14", "train.checkpoint_every=7") == 0  # states 7, 14
    block = run_dir / "blocks" / "block_0"
    (block / "state_00000014.pt").write_bytes(b"torn")  # the latest is corrupt: resume at 7
    with caplog.at_level("WARNING"):
        assert _train(run_dir, "train.steps=12", "train.checkpoint_every=6",
                      "train.keep_checkpoints=1") == 0
    # the resume line said step 14 before the files were read: the step gone on from is told
    assert "blocks/block_0/state_00000007.pt of step 7 read instead" in caplog.text
    manifest = json.loads((block / "manifest.json").read_text())
    assert [e["step"] for e in manifest["state"]] == [12]  # not the stale, corrupt 14
    assert not (block / "state_00000014.pt").exists()
    from dbparallel.training.checkpoint import BlockCheckpoints
    from dbparallel.training.storage import Storage

    assert BlockCheckpoints(Storage(str(run_dir)), 0).load_latest("state")["step"] == 12


def test_a_chaos_schedule_kills_each_block_within_its_own_steps() -> None:
    from dbparallel.config import load_config
    from dbparallel.runtime import faults

    cfg = load_config([TINY], [
        "train.block_steps=[40,3]", "debug.chaos_seed=1", "debug.chaos_kills=12"])
    schedule = faults.kill_steps(cfg)
    assert set(schedule) == {0, 1}  # 12 kills over 2 blocks: both drawn (seed 1)
    assert all(1 <= s < 40 for s in schedule[0]) and max(schedule[0]) >= 3
    assert all(1 <= s < 3 for s in schedule[1])


def test_a_run_dir_that_cannot_be_created_is_named(tmp_path, capsys) -> None:
    in_the_way = tmp_path / "a_file"
    in_the_way.write_text("not a folder")
    assert _train(in_the_way) == 2
    err = capsys.readouterr().err
    assert f"run.dir={in_the_way}: cannot create the run directory" in err
    assert "Traceback" not in err and in_the_way.read_text() == "not a folder"


def test_an_unusable_cache_folder_is_named(tmp_path, capsys, monkeypatch) -> None:
    in_the_way = tmp_path / "a_file"
    in_the_way.write_text("not a folder")
    monkeypatch.setenv("DBPARALLEL_CACHE", str(in_the_way / "cache"))
    assert main(["data", "check", TINY]) == 2
    err = capsys.readouterr().err
    assert f"DBPARALLEL_CACHE={in_the_way / 'cache'}: cannot be created" in err


@pytest.mark.parametrize(("signame", "code", "said"), [
    ("SIGINT", 130, "interrupted"),  # Ctrl-C
    ("SIGTERM", 143, "stopped (SIGTERM)"),  # kill, timeout, ray job stop, a pod stopping
])
def test_ctrl_c_stops_a_local_run_in_one_line_keeping_its_checkpoints(
        tmp_path, signame: str, code: int, said: str) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dbparallel", "train", TINY, "--local", f"run.dir={run_dir}",
         "metrics.port=0", "train.steps=100000", "train.checkpoint_every=2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # as from a terminal: a suite run in the background (nohup, `cmd &`) ignores SIGINT,
        # and a child inherits that, so Ctrl-C would never reach it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        manifest = run_dir / "blocks" / "block_0" / "manifest.json"
        deadline = time.monotonic() + 300  # a hang guard only: the first save comes at step 2
        while not manifest.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert manifest.exists(), proc.poll()
        proc.send_signal(getattr(signal, signame))
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    assert err.strip().splitlines()[-1] == \
        f"dbparallel: {said} (run the same command again to resume)"
    assert "Traceback" not in err
    assert json.loads(manifest.read_text())["state"]  # the checkpoints written stay
    lease = json.loads((run_dir / "blocks" / "block_0" / "lease.json").read_text())
    assert lease["holder"] == ""  # released: the next writer goes on at once
    assert not (run_dir / "blocks" / "block_0" / "failed.json").exists()  # a stop, no failure


def test_a_relative_data_path_resumes_however_spelled_and_is_named_elsewhere(
        tmp_path, capsys, monkeypatch) -> None:
    (tmp_path / "data").mkdir()
    _parquet(tmp_path / "data" / "t.parquet", list(range(10)) * 40)
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    source = ["data.source=parquet", "train.steps=2"]
    assert _train(run_dir, *source, "data.path=data/t.parquet") == 0
    # one file, no split: the held-out loss is on training rows, and the summary says so
    assert "heldout_loss: on training rows, as the data has no validation or test split" \
        in capsys.readouterr().out
    assert {r["heldout_split"] for r in _report(run_dir)["per_block"]} == {"train"}
    for spelling in ("./data/t.parquet", str(tmp_path / "data" / "t.parquet")):
        assert _train(run_dir, *source, f"data.path={spelling}") == 0, capsys.readouterr().err
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert main(["eval", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert f"data.path is relative, and this process runs in {elsewhere}" in err
    assert f"{run_dir} was trained on the data at data/t.parquet, which are not there" in err


def test_data_moved_with_their_times_resume_and_other_data_there_are_refused(
        tmp_path, capsys, caplog) -> None:
    import shutil

    (tmp_path / "data").mkdir()
    _parquet(tmp_path / "data" / "t.parquet", list(range(10)) * 40)
    run_dir = tmp_path / "run"
    source = ["data.source=parquet", "train.checkpoint_every=2"]
    assert _train(run_dir, *source, f"data.path={tmp_path / 'data'}", "train.steps=2") == 0
    shutil.move(tmp_path / "data", tmp_path / "moved")  # a rename keeps the files' times
    capsys.readouterr()
    assert main(["eval", str(run_dir)]) == 2  # the run reads the data where it pinned them
    gone = capsys.readouterr().err
    assert f"trained on the data at {tmp_path / 'data'}, which are not there on " in gone
    assert f"with run.dir={run_dir} data.path=<their new place>" in gone
    with caplog.at_level("WARNING"):
        assert _train(run_dir, *source, f"data.path={tmp_path / 'moved'}",
                      "train.steps=4") == 0, capsys.readouterr().err
    assert f"the data moved from {tmp_path / 'data'} to {tmp_path / 'moved'}" in caplog.text
    assert not [r for r in caplog.records if "other settings" in r.getMessage()
                and "data.path" in r.getMessage()]  # the data's own line says it
    assert [r["resumed_from"] for r in _report(run_dir)["per_block"]] == [2, 2]
    pinned = json.loads((run_dir / "data_index.json").read_text())
    assert pinned["source"] == str(tmp_path / "moved")  # blocks on Ray read them there
    assert str(tmp_path / "moved") in pinned["splits"]["train"][0]["uri"]
    caplog.clear()
    assert _train(run_dir, *source, f"data.path={tmp_path / 'moved'}", "train.steps=4") == 0
    assert "moved" not in caplog.text  # said once
    # a copy that lost the files' times, and other rows in the same place, are refused
    (tmp_path / "copy").mkdir()
    shutil.copy(tmp_path / "moved" / "t.parquet", tmp_path / "copy" / "t.parquet")
    capsys.readouterr()
    assert _train(run_dir, *source, f"data.path={tmp_path / 'copy'}", "train.steps=6") == 2
    assert "other sizes or modification times" in capsys.readouterr().err
    _parquet(tmp_path / "moved" / "t.parquet", list(range(10)) * 30)
    assert _train(run_dir, *source, f"data.path={tmp_path / 'moved'}", "train.steps=6") == 2
    assert "was trained on other data than" in capsys.readouterr().err


def test_a_rerun_that_trains_nothing_keeps_the_measurements(tmp_path, caplog) -> None:
    run_dir = tmp_path / "run"
    assert _train(run_dir, "train.steps=6") == 0
    first = _report(run_dir)["per_block"]
    assert all(r["data_memory_bytes"] > 0 and r["model_flops_per_step"] for r in first)
    assert all(r["heldout_loss"] > 0 for r in first)  # at the last step
    assert {r["heldout_split"] for r in first} == {"train"}  # the digits have no other split
    assert _train(run_dir, "train.steps=4") == 0  # every block is at step 6 already
    again = _report(run_dir)["per_block"]
    for key in ("data_memory_bytes", "model_flops_per_step", "achieved_tflops", "steps",
                "heldout_loss"):
        assert [r[key] for r in again] == [r[key] for r in first], key
    assert "block 0 is at step 6, past the 4 steps asked" in caplog.text
    assert _train(run_dir, "train.steps=6", "train.assemble_every=2") == 0
    assert "train.assemble_every=2 is for Ray runs" in caplog.text


def test_data_of_the_wrong_kind_for_the_task_is_named(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("DBPARALLEL_CACHE", str(tmp_path / "cache"))
    path = _parquet(tmp_path / "images.parquet", list(range(10)) * 4)
    assert main(["data", "check", path, "task=ar"]) == 2
    err = capsys.readouterr().err
    assert f"task=ar trains on text, and {path} holds images" in err
    (tmp_path / "c.txt").write_text("To be, or not to be, that is the question.\n" * 50)
    assert main(["data", "check", str(tmp_path / "c.txt")]) == 2
    err = capsys.readouterr().err  # text is named text by its file name, before it is read
    assert "task=dit trains on images, and data.source=text is text: set task=mdm, ar or " \
        "looped" in err
    assert not (tmp_path / "cache" / "corpus").exists()  # refused before it was tokenized
    assert _train(tmp_path / "run", "--block", "2") == 2  # before the data are read
    assert "--block 2: must be in 0..1" in capsys.readouterr().err


def test_a_run_trained_under_the_earlier_default_run_dir_is_named(tmp_path, monkeypatch,
                                                                  caplog) -> None:
    """Every task and data set once defaulted to runs/digits-dit: a vit run there, rerun
    with today's default (runs/digits-vit), is told where it is."""
    monkeypatch.chdir(tmp_path)
    common = ["train", TINY, "--local", "metrics.port=0", "task=vit", "train.steps=2"]
    assert main([*common, "run.dir=runs/digits-dit", "run.name=digits-dit"]) == 0
    with caplog.at_level("WARNING"):
        assert main([*common, 'run.name=""']) == 0  # TINY names its runs: back to the default
    assert "runs/digits-dit holds a run of this network and data, from when it was the " \
        "default run.dir of every task and data set; this run starts in runs/digits-vit: " \
        "give run.dir=runs/digits-dit to resume that one instead" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):  # a resume of the new run, or another network: nothing
        assert main([*common, 'run.name=""']) == 0
        shutil.rmtree(tmp_path / "runs" / "digits-vit")
        assert main([*common, 'run.name=""', "model.depth=4"]) == 0
    assert "runs/digits-dit holds" not in caplog.text


def test_a_ray_driver_s_run_under_the_earlier_default_run_dir_is_named_too(
        tmp_path, monkeypatch, caplog) -> None:
    """A Ray run's driver hands its default run.dir on made absolute (absolute_paths): it is
    still the default, and the earlier run is named as a --local run's is."""
    from dbparallel.config import load_config
    from dbparallel.training.run_dir import absolute_paths, open_run

    monkeypatch.chdir(tmp_path)
    open_run(load_config([TINY], ["task=vit", "run.dir=runs/digits-dit"]))  # its config.yaml
    cfg = absolute_paths(load_config([TINY], ["task=vit"]))
    assert cfg.run.dir == str(tmp_path / "runs" / "digits-vit")
    with caplog.at_level("WARNING"):
        open_run(cfg)
    assert f"this run starts in {tmp_path / 'runs' / 'digits-vit'}: give " \
        "run.dir=runs/digits-dit to resume that one instead" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):  # a run.dir given elsewhere: nothing
        open_run(load_config([TINY], ["task=vit", f"run.dir={tmp_path / 'mine'}"]))
    assert "runs/digits-dit holds" not in caplog.text


def test_a_ray_run_s_clean_up_goes_on_past_a_step_that_fails(caplog) -> None:
    """A damaged lease file met while the leases are released must not keep the driver from
    stopping the block processes, freeing the placement group and leaving Ray."""
    from dbparallel.errors import RunDirError
    from dbparallel.runtime.launch import _each

    done: list[str] = []

    def damaged() -> None:
        raise RunDirError("blocks/block_1/lease.json: damaged")

    _each(("release the blocks' write leases", damaged),
          ("stop the block processes", lambda: done.append("stopped")),
          ("release the blocks' write leases", damaged),  # again, as the driver does
          ("free the placement group", None),  # none was reserved
          ("disconnect from Ray", lambda: done.append("disconnected")))
    assert done == ["stopped", "disconnected"]
    assert caplog.text.count("could not release the blocks' write leases: "
                             "blocks/block_1/lease.json: damaged") == 1  # said once


@pytest.mark.parametrize("later", [True, False], ids=["a later step", "the same step"])
def test_a_snapshot_written_as_the_assembly_reads_it_is_read(straight, tmp_path, monkeypatch,
                                                            later) -> None:
    """Block 0 writes a snapshot (of a later step, which replaces the one kept; or of the
    same step again, as a block that resumed from an older training state or restores an
    unreadable snapshot does) before each of the assembly's reads in turn: every assembly
    finds each block's snapshot. One of the same step is the same file with another
    checksum: the assembly read its manifest again only where the files it lists changed
    names, and so refused the block as corrupt."""
    import itertools

    from holders import Interleaved

    import dbparallel.training.snapshots as snapshots
    from dbparallel.training.checkpoint import BlockCheckpoints
    from dbparallel.training.run_files import run_config
    from dbparallel.training.storage import Storage

    monkeypatch.setattr(snapshots, "RETRY_WAIT_S", 0.0)
    cfg = run_config(str(straight))
    saved = BlockCheckpoints(Storage(str(straight)), 0).load_latest("snapshot")
    step = saved["meta"]["step"] + later
    again = {**saved, "meta": {**saved["meta"], "step": step, "written": "again"}}

    def write(storage: Storage) -> None:
        BlockCheckpoints(storage, 0, keep_snapshots=1).save("snapshot", step, again)

    for n in itertools.count():
        shutil.copytree(straight, tmp_path / str(n))
        storage = Interleaved(str(tmp_path / str(n)), n, write)
        found = snapshots.load_snapshots(cfg, storage)
        assert found[0]["meta"].get("written") in (None, "again")
        if storage.reads <= n:
            assert n > 3 and found[0]["meta"].get("written") is None
            break
