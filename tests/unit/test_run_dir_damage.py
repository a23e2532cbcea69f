"""A run directory's files damaged, missing or in the way of an output: every command names the
file and exits 2, no traceback, nothing of the run replaced; bad input found before the run
directory is written leaves none."""

from __future__ import annotations

import io
import json
import pickle
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from dbparallel import cli
from dbparallel.training.storage import DamagedFile, Storage, damaged

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "jobs" / "tiny_cpu.yaml")
FAST = ["train.steps=2", "train.checkpoint_every=2", "metrics.port=0"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("trained") / "run"
    assert cli.main(["train", "--local", TINY, f"run.dir={run}", *FAST]) == 0
    return run


@pytest.fixture
def run(trained: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def _refused(capsys: pytest.CaptureFixture, argv: list[str], *names: str) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and all(n in err for n in names), err
    return err


@pytest.mark.parametrize("name, text", [
    ("config.yaml", "model: [1,"),  # not YAML
    ("config.yaml", "- a\n"),  # not a mapping
    ("config.yaml", ""),  # empty: not the defaults
    ("config.yaml", b"\x88\xff"),  # not UTF-8
    ("data_index.json", "{"),
    ("data_index.json", "{}"),
    ("blocks/block_0/manifest.json", "{"),
    ("blocks/block_0/manifest.json", "[]"),
    ("blocks/block_0/manifest.json", '{"state": [{"step": 2}], "snapshot": []}'),
])
def test_a_damaged_file_of_a_run_is_named(run: Path, capsys, name: str,
                                          text: str | bytes) -> None:
    path = run / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    err = _refused(capsys, ["eval", str(run)], name, "damaged")
    assert "restore it" in err
    # what else fixes it: a new run.dir only for the config; the data pinned again; the
    # block's checkpoints discarded
    assert {"config.yaml": "new run.dir", "data_index.json": "delete it",
            "blocks/block_0/manifest.json": "train.on_unreadable=restart"}[name] in err
    if name != "config.yaml":  # train reads it from its own config; the others it must read
        _refused(capsys, ["train", "--local", TINY, f"run.dir={run}", *FAST], name)
    assert path.read_bytes() == (text if isinstance(text, bytes) else text.encode())


def test_a_damaged_file_s_error_comes_back_from_a_block_process_as_itself() -> None:
    """A block's Ray actor sends the error it stops on to the driver pickled: a damaged
    file's came back as Ray's "Failed to deserialize exception" and a traceback."""
    err = damaged("runs/x/blocks/block_1/lease.json", "Expecting value: line 1 column 1")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is DamagedFile and str(back) == str(err)
    assert (back.where, back.why) == (err.where, err.why)


@pytest.mark.parametrize("text", [
    "{",  # not JSON
    '{"holder": "x"}',  # fields missing: was a KeyError's traceback
])
def test_a_damaged_lease_says_to_delete_it_and_the_block_then_trains_on(
        run: Path, capsys, text: str) -> None:
    """A lease holds nothing the manifest does not keep: the refusal says to delete it (not to
    restore it or start a new run.dir), and the block then resumes from its checkpoint."""
    lease = run / "blocks" / "block_1" / "lease.json"
    lease.write_text(text)
    argv = ["train", "--local", TINY, f"run.dir={run}", *FAST, "train.steps=4"]
    err = _refused(capsys, argv, "block_1/lease.json", "damaged", "delete it")
    assert "restore it" not in err
    assert cli.main(["status", str(run)]) == 0
    out = capsys.readouterr().out
    assert "damaged" in out and "delete it" in out
    lease.unlink()
    assert cli.main(argv) == 0
    report = json.loads((run / "report.json").read_text())
    assert [b["resumed_from"] for b in report["per_block"]] == [2, 2]
    assert [b["steps"] for b in report["per_block"]] == [4, 4]


def test_an_edited_config_yaml_is_named_with_the_key(run: Path, capsys) -> None:
    config = run / "config.yaml"
    config.write_text(config.read_text() + "bogus_key: 1\n")
    _refused(capsys, ["eval", str(run)], "config.yaml", "bogus_key")
    text = config.read_text().replace("bogus_key: 1\n", "")
    assert "\n  depth: 2\n" in text
    config.write_text(text.replace("\n  depth: 2\n", "\n  depth: two\n"))
    _refused(capsys, ["eval", str(run)], "config.yaml", "depth")


def test_a_missing_config_yaml_still_refuses_another_network_and_writes_nothing(
        run: Path, capsys) -> None:
    (run / "config.yaml").unlink()
    _refused(capsys, ["train", "--local", TINY, f"run.dir={run}", *FAST, "model.hidden=64"],
             "model.hidden")
    assert not (run / "config.yaml").exists()  # the original values can still resume it
    assert cli.main(["train", "--local", TINY, f"run.dir={run}", *FAST]) == 0
    assert (run / "config.yaml").is_file()


def test_a_new_run_in_a_folder_of_other_files_writes_over_none_of_them(
        tmp_path: Path, capsys, caplog) -> None:
    """A folder with no run in it that holds a file of a run's name (the user's own
    report.json) is refused before anything is written; one with other files is trained in,
    told of them, and they stay as they were."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "report.json").write_text("mine")
    (folder / ".hidden").write_text("")
    _refused(capsys, ["train", "--local", TINY, f"run.dir={folder}", *FAST],
             "report.json", "no config.yaml", "write over them")
    assert sorted(p.name for p in folder.iterdir()) == [".hidden", "report.json"]
    (folder / "report.json").rename(folder / "notes.txt")
    assert cli.main(["train", "--local", TINY, f"run.dir={folder}", *FAST]) == 0
    assert (folder / "notes.txt").read_text() == "mine" and (folder / "config.yaml").is_file()
    assert any("is not empty (notes.txt): the run's files go beside them" in r.message
               for r in caplog.records)
    caplog.clear()  # its rerun resumes: no word of the folder
    assert cli.main(["train", "--local", TINY, f"run.dir={folder}", *FAST]) == 0
    assert not any("is not empty" in r.message for r in caplog.records)


def test_bad_lines_of_the_metrics_files_are_skipped(run: Path, capsys) -> None:
    metrics = next(run.rglob("metrics*.jsonl"))
    metrics.write_bytes(metrics.read_bytes() + b"\x88\xff not utf-8\n")
    (run / "diagnostics.json").write_text("[1, 2]")
    assert cli.main(["plot", str(run), "--out", str(run.parent / "c.png")]) == 0
    assert (run.parent / "c.png").stat().st_size > 0


def test_an_output_never_replaces_a_file_of_a_run(run: Path, tmp_path: Path,
                                                   capsys) -> None:
    config = (run / "config.yaml").read_bytes()
    _refused(capsys, ["export", str(run), "--out", str(run / "config.yaml")],
             "--out", "run directory")
    _refused(capsys, ["sample", str(run), "--out", str(run / "samples.png")],
             "--out", "run directory")
    _refused(capsys, ["export", str(run), "--out", str(next(run.rglob("manifest.json")))],
             "--out", "run directory")
    assert (run / "config.yaml").read_bytes() == config
    # a file of its own in the run directory is fine, and may be written again
    for _ in range(2):
        assert cli.main(["export", str(run), "--out", str(run / "net.safetensors")]) == 0
        assert cli.main(["sample", str(run), "--out", str(run / "grid.png")]) == 0


def test_every_file_a_run_writes_at_its_root_is_known(trained: Path) -> None:
    from dbparallel.training.run_dir import RUN_FILES

    written = {p.name for p in trained.iterdir() if p.is_file()}
    assert written and written <= set(RUN_FILES), written - set(RUN_FILES)


@pytest.mark.parametrize("out", ["", "folder", "a_file/x.safetensors"])
def test_an_export_that_cannot_be_written_is_named_and_leaves_nothing(
        trained: Path, tmp_path: Path, capsys, monkeypatch, out: str) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "a_file").write_text("a file where a folder would go")
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    _refused(capsys, ["export", str(trained), "--out", out],
             "a_file" if out.startswith("a_file") else "--out")
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # no temp file left


def test_a_failed_write_leaves_no_temp_file(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    (tmp_path / "d").mkdir()
    with pytest.raises(OSError):
        storage.write_bytes("d", b"x" * 1000)  # a folder is in the way of the rename
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_a_full_disk_names_the_file_it_could_not_write(tmp_path: Path, monkeypatch) -> None:
    """A full disk (which this test cannot fill: the fsync that reports it stands in) says
    which file of the run it met, and leaves no temp file."""
    import errno
    import os

    from dbparallel.training import storage as storage_module

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(storage_module.os, "fsync", full)
    with pytest.raises(OSError, match=r"No space left on device: '.*/blocks/block_1/x\.pt'"):
        Storage(str(tmp_path)).write_bytes("blocks/block_1/x.pt", b"x" * 1000)
    assert list((tmp_path / "blocks" / "block_1").iterdir()) == []


def test_predict_batch_must_be_positive(trained: Path, capsys) -> None:
    _refused(capsys, ["predict", str(trained), "x.png", "--batch", "0"], "--batch")
    _refused(capsys, ["predict", str(trained), "x.png", "--batch", "-1"], "--batch")


def test_data_without_training_rows_is_refused_before_the_run_directory(
        tmp_path: Path, capsys) -> None:
    table = pa.table({"image": pa.array([[0] * 64] * 4, pa.list_(pa.uint8())),
                      "label": pa.array([0, 1, 2, 3], pa.int64()),
                      "split": pa.array(["test"] * 4)})
    pq.write_table(table, tmp_path / "only_test.parquet")
    run = tmp_path / "run"
    _refused(capsys, ["train", "--local", TINY, f"run.dir={run}", *FAST, "data.source=parquet",
                      f"data.path={tmp_path / 'only_test.parquet'}"], "no 'train' rows")
    assert not run.exists()
    # `data check` checks them (a held-out set may be checked alone) and says train refuses
    assert cli.main(["data", "check", str(tmp_path / "only_test.parquet"),
                     "data.channels=1"]) == 0
    assert ("warning: " + str(tmp_path / "only_test.parquet") + ": no 'train' rows (splits "
            "here: test); rows train unless a 'split' column or their path") in \
        capsys.readouterr().err


def test_a_folder_whose_name_holds_an_equals_sign_is_a_path(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "year=2024"
    folder.mkdir()
    table = pa.table({"image": pa.array([[0] * 64] * 8, pa.list_(pa.uint8())),
                      "label": pa.array(list(range(8)), pa.int64())})
    pq.write_table(table, folder / "part-0.parquet")
    assert cli.main(["data", "check", str(folder), "data.image_size=8",
                     "data.channels=1"]) == 0
    assert "train: 8 rows" in capsys.readouterr().out


def test_a_resume_with_other_settings_says_which(run: Path, caplog) -> None:
    with caplog.at_level("WARNING"):  # blocks that train on (a finished run keeps its lr)
        assert cli.main(["train", "--local", TINY, f"run.dir={run}", *FAST, "train.steps=3",
                         "train.lr=0.01"]) == 0
    said = [r.getMessage() for r in caplog.records if "other settings" in r.getMessage()]
    assert len(said) == 1 and "train.lr" in said[0] and "-> 0.01" in said[0], said
    assert "lr: 0.01" in (run / "config.yaml").read_text()


def test_where_a_run_is_driven_is_not_a_changed_setting() -> None:
    from dbparallel.config import changed_settings, load_config, to_dict

    on_ray = to_dict(load_config([TINY], ["runtime.address=10.0.0.1:6379"]))
    here = load_config([TINY], ["runtime.local=true", "train.lr=0.01"])
    assert [k for k, _, _ in changed_settings(on_ray, here)] == ["train.lr"]


def test_a_damaged_manifest_is_refused_or_discarded_as_train_on_unreadable_says(
        run: Path, capsys, caplog) -> None:
    manifest = run / "blocks" / "block_0" / "manifest.json"
    manifest.write_text("{")
    err = _refused(capsys, ["train", "--local", TINY, f"run.dir={run}", *FAST],
                   "block 0", "manifest.json", "train.on_unreadable=restart")
    assert "Traceback" not in err and manifest.read_text() == "{"
    checkpoints = sorted(p.name for p in manifest.parent.glob("*.pt"))
    assert checkpoints  # nothing discarded on refusal
    with caplog.at_level("WARNING"):
        assert cli.main(["train", "--local", TINY, f"run.dir={run}", *FAST,
                         "train.on_unreadable=restart"]) == 0
    assert any("discards" in r.getMessage() and "state_00000002.pt" in r.getMessage()
               for r in caplog.records)
    # block 0 trained again from step 0: a readable manifest listing its new checkpoints
    from dbparallel.training.checkpoint import BlockCheckpoints
    from dbparallel.training.storage import Storage

    assert BlockCheckpoints(Storage(str(run)), 0).steps("state") == [2]


def test_a_deleted_manifest_is_refused_as_a_damaged_one_not_trained_over(
        run: Path, capsys, caplog) -> None:
    """The block's checkpoint files without their manifest: the block trained again from
    step 0 over them, without a word."""
    manifest = run / "blocks" / "block_0" / "manifest.json"
    manifest.unlink()
    files = sorted(p.name for p in manifest.parent.glob("*.pt"))
    argv = ["train", "--local", TINY, f"run.dir={run}", *FAST, "train.steps=4"]
    _refused(capsys, argv, "block 0", "manifest.json is missing", "state_00000002.pt",
             "train.on_unreadable=restart")
    assert sorted(p.name for p in manifest.parent.glob("*.pt")) == files
    from dbparallel.config import load_config
    from dbparallel.training.status import run_status
    from dbparallel.training.storage import Storage

    row = run_status(Storage(str(run)), load_config([TINY], [f"run.dir={run}"])).blocks[0]
    assert row.state == "damaged" and "manifest.json is missing" in row.problem
    err = _refused(capsys, ["eval", str(run)], "the manifest of block(s) [0] is missing",
                   "snapshot_00000002.pt", "train.on_unreadable=restart")
    assert "no snapshot yet" not in err
    with caplog.at_level("WARNING"):
        assert cli.main([*argv, "train.on_unreadable=restart"]) == 0
    assert any("discards" in r.getMessage() and "snapshot_00000002.pt" in r.getMessage()
               for r in caplog.records)
    report = json.loads((run / "report.json").read_text())
    assert [b["resumed_from"] for b in report["per_block"]] == [0, 2]


def test_a_corrupt_snapshot_of_a_finished_block_is_named_and_written_again(
        run: Path, capsys, caplog) -> None:
    snapshot = run / "blocks" / "block_0" / "snapshot_00000002.pt"
    good = snapshot.read_bytes()
    damaged = bytearray(good)
    damaged[len(good) // 2] ^= 0xFF
    snapshot.write_bytes(bytes(damaged))
    with caplog.at_level("WARNING"):
        err = _refused(capsys, ["eval", str(run)], "snapshot_00000002.pt", "corrupt",
                       "dbparallel train")
    assert "no snapshot yet" not in err
    said = [r.getMessage() for r in caplog.records if "trying an older one" in r.getMessage()]
    assert len(said) == 1, said  # read once: not again while its list stays the same
    # the same train command trains nothing more and writes the snapshot again from the
    # training state of step 2, which holds the same EMA weights
    assert cli.main(["train", "--local", TINY, f"run.dir={run}", *FAST]) == 0
    before, after = (torch.load(io.BytesIO(b), weights_only=True)
                     for b in (good, snapshot.read_bytes()))
    assert before["meta"]["step"] == after["meta"]["step"] == 2
    assert before["ema"].keys() == after["ema"].keys()
    assert all(torch.equal(before["ema"][k], after["ema"][k]) for k in before["ema"])
    assert cli.main(["eval", str(run)]) == 0


def test_only_the_writer_discards_unreadable_checkpoints(run: Path) -> None:
    """With runtime.replicas_per_block > 1 every replica resumes; with
    train.on_unreadable=restart only the writer (rank 0, holding the lease) discards the
    block's checkpoints, the others start from step 0 beside it."""
    from dbparallel.config import load_config
    from dbparallel.training.block_trainer import BlockTrainer
    from dbparallel.training.checkpoint import BlockCheckpoints
    from dbparallel.training.lease import BlockLease
    from dbparallel.training.resume import resume

    for f in (run / "blocks" / "block_1").glob("state_*.pt"):
        f.write_bytes(b"torn")
    cfg = load_config([TINY], [f"run.dir={run}", *FAST, "train.on_unreadable=restart"])
    storage = Storage(str(run))
    checkpoints = BlockCheckpoints(storage, 1)
    assert resume(BlockTrainer(cfg, 1), checkpoints, cfg, None) == 0  # a replica
    assert checkpoints.steps("state") == [2]  # kept: not its to discard
    lease = BlockLease(storage, 1, "writer", 60.0)
    lease.acquire()
    assert resume(BlockTrainer(cfg, 1), checkpoints, cfg, lease) == 0
    assert checkpoints.steps("state") == [] and not list(
        (run / "blocks" / "block_1").glob("state_*.pt"))


def test_a_first_checkpoint_stopped_before_its_manifest_trains_from_the_start(
        run: Path, caplog) -> None:
    """A process stopped between its first training state's file and the manifest that lists
    it leaves that one file: the block trains from step 0, as it would have."""
    folder = run / "blocks" / "block_0"
    (folder / "manifest.json").unlink()
    for snapshot in folder.glob("snapshot_*.pt"):
        snapshot.unlink()
    for state in sorted(folder.glob("state_*.pt"))[1:]:
        state.unlink()
    argv = ["train", "--local", TINY, f"run.dir={run}", *FAST, "train.steps=4"]
    with caplog.at_level("WARNING"):
        assert cli.main(argv) == 0
    assert any("stopped before its manifest listed it" in r.getMessage()
               for r in caplog.records)
    report = json.loads((run / "report.json").read_text())
    assert [b["resumed_from"] for b in report["per_block"]] == [0, 2]
