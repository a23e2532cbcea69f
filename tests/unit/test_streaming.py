"""The streamed data path: Parquet layouts, splits, window-bounded reading, exact resume
mid-epoch, bad rows met mid-stream, and the validation pass (local mode, real Parquet files)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from dbparallel.cli import main
from dbparallel.config import load_config
from dbparallel.data import shard_reader, split_reader
from dbparallel.data.parquet_index import parquet_index
from dbparallel.data.tables import image_table
from dbparallel.errors import DataError
from dbparallel.training.loop import BlockRun
from dbparallel.training.storage import Storage

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "jobs" / "tiny_cpu.yaml")
ROWS, GROUP = 600, 50  # 12 shards of 50 rows


def _rows(n: int = ROWS, seed: int = 0, labels: np.ndarray | None = None) -> pa.Table:
    rng = np.random.default_rng(seed)
    images = (rng.integers(0, 256, (n, 1, 8, 8)) / 255.0).astype(np.float32)
    y = rng.integers(0, 10, n) if labels is None else labels
    return image_table(images, y)


def _write(table: pa.Table, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=GROUP)
    return path


def _cfg(tmp_path: Path, data: Path, *extra: str):
    return load_config([TINY], [f"run.dir={tmp_path / 'run'}", "data.source=parquet",
                                f"data.path={data}", "data.window_shards=2", "train.steps=30",
                                "train.checkpoint_every=10", *extra])


def _losses(cfg, index, block: int = 0, steps: int = 30) -> list[float]:
    run = BlockRun(cfg, block, index, Storage(cfg.run_dir))
    losses: list[float] = []
    run.train_until(steps, lambda s: losses.append(s.loss))
    run.close()
    return losses


def test_a_directory_of_files_trains_like_one_file(tmp_path) -> None:
    table = _rows()
    one = _write(table, tmp_path / "one" / "all.parquet")
    for i in range(3):  # the same rows and row groups, cut into three files
        _write(table.slice(i * 200, 200), tmp_path / "many" / f"part-{i:05d}.parquet")
    a, b = parquet_index(str(one)), parquet_index(str(tmp_path / "many"))
    assert [s.rows for s in a.shards("train")] == [s.rows for s in b.shards("train")] == [50] * 12
    cfg = _cfg(tmp_path, one)
    assert _losses(cfg, a) == _losses(_cfg(tmp_path / "b", tmp_path / "many"), b)


def test_every_shard_is_read_once_per_epoch_two_windows_at_most(tmp_path, monkeypatch) -> None:
    data = _write(_rows(), tmp_path / "d.parquet")
    cfg = _cfg(tmp_path, data, "train.batch_size=40")  # 15 steps = 1 epoch
    reads: list[int] = []
    real = shard_reader.read_pieces
    monkeypatch.setattr("dbparallel.training.stream.read_pieces",
                        lambda shard, *a: reads.append(shard.row_group) or real(shard, *a))
    run = BlockRun(cfg, 0, parquet_index(str(data)), Storage(cfg.run_dir), prefetch=False)
    held = []
    for step in range(15):
        run.batch(step)
        held.append(len(run.stream._windows))
    assert sorted(reads) == list(range(12))  # every row group once in the epoch
    assert max(held) <= 2  # the window in use (and the next, read ahead)
    run.close()


@pytest.mark.parametrize("prefetch", [False, True])
def test_a_data_set_within_one_window_is_read_once_not_once_per_epoch(
        tmp_path, monkeypatch, prefetch) -> None:
    data = _write(_rows(), tmp_path / "d.parquet")
    index = parquet_index(str(data))
    cfg = _cfg(tmp_path, data, "train.batch_size=40", "data.window_shards=12")  # 1 window
    reads: list[int] = []
    real = shard_reader.read_pieces
    monkeypatch.setattr("dbparallel.training.stream.read_pieces",
                        lambda shard, *a: reads.append(shard.row_group) or real(shard, *a))
    run = BlockRun(cfg, 0, index, Storage(cfg.run_dir), prefetch=prefetch)
    batches = [run.batch(step) for step in range(45)]  # 3 epochs of 15 steps
    run.close()
    assert sorted(reads) == list(range(12))  # every row group once in 3 epochs
    monkeypatch.setattr("dbparallel.training.stream.read_pieces", real)
    fresh = BlockRun(_cfg(tmp_path / "b", data, "train.batch_size=40",
                          "data.window_shards=12"), 0, index, Storage(str(tmp_path / "b" / "run")),
                     prefetch=False)
    for step in (16, 44):  # the same rows as a stream that reads each epoch from the files
        fresh.stream._windows.clear()
        again = fresh.batch(step)
        assert all(torch.equal(again[k], batches[step][k]) for k in again)
    fresh.close()


@pytest.mark.parametrize("window", [5, 12])
def test_windows_built_from_held_rows_give_the_batches_a_fresh_read_gives(
        tmp_path, monkeypatch, window) -> None:
    """12 shards in windows of 5 (block 1's last window of epochs 0 and 1 shares shards with
    the first of the next) or of 12 (every window shares the held one's rows, in another
    order)."""
    data = _write(_rows(), tmp_path / "d.parquet")
    index = parquet_index(str(data))
    extra = ("train.batch_size=40", f"data.window_shards={window}")
    run = BlockRun(_cfg(tmp_path, data, *extra), 1, index, Storage(str(tmp_path / "run")),
                   prefetch=False)
    fresh = BlockRun(_cfg(tmp_path / "b", data, *extra), 1, index,
                     Storage(str(tmp_path / "b" / "run")), prefetch=False)
    reads: list[int] = []
    real = shard_reader.read_pieces
    monkeypatch.setattr("dbparallel.training.stream.read_pieces",
                        lambda shard, *a: reads.append(shard.row_group) or real(shard, *a))
    for step in range(45):  # 3 epochs of 15 steps
        kept = run.batch(step)
        monkeypatch.setattr("dbparallel.training.stream.read_pieces", real)
        fresh.stream._windows.clear()  # nothing held: every window read from the files
        again = fresh.batch(step)
        assert all(torch.equal(again[k], kept[k]) for k in again), step
        monkeypatch.setattr("dbparallel.training.stream.read_pieces",
                            lambda shard, *a: reads.append(shard.row_group) or real(shard, *a))
    run.close()
    fresh.close()
    assert len(reads) < 3 * 12  # some windows were built from held rows, not read again


def test_resume_mid_epoch_is_exact_and_reads_no_earlier_window(tmp_path, monkeypatch) -> None:
    data = _write(_rows(), tmp_path / "d.parquet")
    index = parquet_index(str(data))
    straight = _losses(_cfg(tmp_path / "a", data), index, block=1)
    cfg = _cfg(tmp_path / "b", data)
    first = BlockRun(cfg, 1, index, Storage(cfg.run_dir))
    first.train_until(13)  # checkpoint at step 10, mid-epoch (epoch = 18.75 steps)
    first.close()
    reads: list[int] = []
    real = shard_reader.read_pieces
    monkeypatch.setattr("dbparallel.training.stream.read_pieces",
                        lambda shard, *a: reads.append(shard.row_group) or real(shard, *a))
    second = BlockRun(cfg, 1, index, Storage(cfg.run_dir), prefetch=False)
    assert second.resumed_from == 10
    resumed: list[float] = []
    second.batch(10)
    assert len(reads) == 2  # one window of 2 shards: nothing of the epoch before
    second.train_until(30, lambda s: resumed.append(s.loss))
    assert resumed == straight[10:]


def test_splits_from_file_names_and_from_a_split_column(tmp_path) -> None:
    _write(_rows(100), tmp_path / "hf" / "train-00000-of-00001.parquet")
    _write(_rows(30, seed=1), tmp_path / "hf" / "test-00000-of-00001.parquet")
    index = parquet_index(str(tmp_path / "hf"))
    assert (index.num_rows("train"), index.num_rows("test"), index.eval_split) == (100, 30, "test")
    mixed = _rows(120).append_column("split", pa.array(["train", "test", "train"] * 40))
    index = parquet_index(str(_write(mixed, tmp_path / "mixed.parquet")))
    assert (index.num_rows("train"), index.num_rows("test")) == (80, 40)
    test = pa.concat_tables(r.table for r in split_reader.iter_split(index, "test", ["label"]))
    assert test.column("label").to_pylist() == mixed.column("label").to_pylist()[1::3]
    bad = mixed.set_column(2, "split", pa.array(["train", "eval", "test"] * 40))
    with pytest.raises(DataError, match=r"bad.parquet: column 'split': row 1 is 'eval'"):
        parquet_index(str(_write(bad, tmp_path / "bad.parquet")))


def test_take_rows_reads_rows_in_the_order_asked(tmp_path) -> None:
    table = _rows()
    index = parquet_index(str(_write(table, tmp_path / "d.parquet")))
    want = np.array([599, 3, 250, 251, 3])
    got = split_reader.take_rows(index, "train", want, ["label"]).column("label").to_pylist()
    assert got == [table.column("label")[int(i)].as_py() for i in want]


def _bad_label_at(row: int) -> pa.Table:
    labels = np.random.default_rng(0).integers(0, 10, ROWS)
    labels[row] = 12
    return _rows(labels=labels)


def test_bad_row_mid_stream_stops_naming_file_and_row_and_keeps_checkpoints(
        tmp_path, capsys) -> None:
    data = _write(_bad_label_at(577), tmp_path / "d.parquet")
    run_dir = tmp_path / "run"
    # windows of one shard: the bad row's window is met a few windows into the stream
    code = main(["train", TINY, "--local", f"run.dir={run_dir}", "data.source=parquet",
                 f"data.path={data}", "data.validate=false", "data.window_shards=1",
                 "train.steps=40", "train.checkpoint_every=5", "metrics.port=0"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{data} row 577: column 'label' has label 12" in err and err.count("\n") == 1
    manifest = json.loads((run_dir / "blocks" / "block_0" / "manifest.json").read_text())
    assert manifest["state"]  # the steps trained before the bad row are kept


def test_data_check_finds_the_bad_row_before_training(tmp_path, capsys) -> None:
    data = _write(_bad_label_at(577), tmp_path / "d.parquet")
    assert main(["data", "check", str(data)]) == 2
    assert f"{data} row 577: column 'label'" in capsys.readouterr().err
    run_dir = tmp_path / "run"
    assert main(["train", TINY, "--local", f"run.dir={run_dir}", "data.source=parquet",
                 f"data.path={data}", "metrics.port=0"]) == 2
    assert not (run_dir / "blocks").exists()  # stopped before any block started
    good = _write(_rows(), tmp_path / "good.parquet")
    assert main(["data", "check", str(good)]) == 0
    assert "train: 600 rows in 12 shards" in capsys.readouterr().out


def test_resume_on_changed_data_is_refused(tmp_path, capsys) -> None:
    data = _write(_rows(), tmp_path / "d.parquet")
    args = ["train", TINY, "--local", f"run.dir={tmp_path / 'run'}", "data.source=parquet",
            f"data.path={data}", "train.steps=4", "metrics.port=0"]
    assert main(args) == 0
    _write(_rows(650), data)  # more rows: every block's order would change
    assert main(args) == 2
    assert "trained on other data" in capsys.readouterr().err


def test_data_corrected_before_any_checkpoint_is_trained_on(tmp_path, capsys, caplog) -> None:
    """A bad row met before any block saved a checkpoint (data.validate=false): once the
    file is corrected, the same command starts the run on it, where a run with checkpoints
    refuses other data."""
    data = _write(_bad_label_at(3), tmp_path / "d.parquet")
    args = ["train", TINY, "--local", f"run.dir={tmp_path / 'run'}", "data.source=parquet",
            f"data.path={data}", "data.validate=false", "train.steps=4",
            "train.checkpoint_every=100", "metrics.port=0"]
    assert main(args) == 2
    assert f"{data} row 3: column 'label'" in capsys.readouterr().err
    _write(_rows(), data)
    assert main(args) == 0
    assert caplog.text.count("the data changed since the run was started") == 1


def test_data_copied_without_its_times_is_refused_naming_the_way_out(tmp_path, capsys) -> None:
    data = _write(_rows(), tmp_path / "d.parquet")
    args = ["train", TINY, "--local", f"run.dir={tmp_path / 'run'}", "data.source=parquet",
            f"data.path={data}", "train.steps=4", "metrics.port=0"]
    assert main(args) == 0
    os.utime(data, ns=(0, 10**18))  # the same bytes, another modification time
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "other sizes or modification times" in err
    assert f"delete {tmp_path / 'run' / 'data_index.json'}" in err


def test_uint8_pixels_decode_on_the_device_like_floats(tmp_path) -> None:
    table = _rows(64)
    pixels = np.rint(np.stack(table.column("image").to_numpy(zero_copy_only=False)) * 255)
    as_uint8 = pa.table({"image": pa.FixedSizeListArray.from_arrays(
        pa.array(pixels.astype(np.uint8).ravel()), 64), "label": table.column("label")})
    from dbparallel.data.images import image_batch

    cfg = load_config([TINY], [])
    a, _ = image_batch(table, cfg.data)
    b, _ = image_batch(as_uint8, cfg.data)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_a_missing_pixel_in_8_bit_images_is_a_bad_row() -> None:
    from dbparallel.data.images import image_rows
    from dbparallel.errors import RowError

    values = np.zeros(3 * 64, dtype=np.uint8)
    mask = np.zeros(3 * 64, dtype=bool)
    mask[64 + 5] = True  # row 1, pixel 5
    table = pa.table({"image": pa.FixedSizeListArray.from_arrays(
        pa.array(values, mask=mask), 64), "label": pa.array([0, 1, 2])})
    with pytest.raises(RowError, match="row 1 has values outside"):
        image_rows(table, load_config([TINY], []).data)


@pytest.mark.parametrize("source", ["digits", "text"])
def test_a_machine_without_the_cache_builds_the_same_data(tmp_path, monkeypatch, source) -> None:
    """Built-in data and tokenized corpora live in each machine's cache: a process that
    does not see the pinned files builds them again, to the same fingerprint."""
    from dbparallel.data.sources import open_data
    from dbparallel.training.data_pin import pin_data, run_data

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("to be or not to be, that is the question. " * 200)
    extra = [f"data.source={source}"] + (
        [f"data.path={corpus}", "task=ar", "data.seq_len=16", "sample.prompt_len=4",
         "sample.gen_len=8"] if source == "text" else [])
    cfg = load_config([TINY], [f"run.dir={tmp_path / 'run'}", *extra])
    monkeypatch.setenv("DBPARALLEL_CACHE", str(tmp_path / "head-cache"))
    storage = Storage(cfg.run_dir)
    storage.makedirs()
    pinned = open_data(cfg.data)
    pin_data(storage, pinned)
    shutil.rmtree(tmp_path / "head-cache")  # another machine: the head's cache is not there
    monkeypatch.setenv("DBPARALLEL_CACHE", str(tmp_path / "worker-cache"))
    here = run_data(cfg, storage)
    assert here.fingerprint == pinned.fingerprint
    first = here.shards("train")[0].uri
    assert str(tmp_path / "worker-cache") in first and Path(first).is_file()


def _png(pixels: np.ndarray) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(out, format="PNG")
    return out.getvalue()


def _encoded_rows(n: int, corrupt: int = -1) -> pa.Table:
    """Hugging Face's layout: a struct of PNG bytes and a path per image."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 8, 8), dtype=np.uint8)
    blobs = [_png(im) for im in images]
    if corrupt >= 0:
        blobs[corrupt] = blobs[corrupt][:20]  # a truncated file
    image = pa.StructArray.from_arrays(
        [pa.array(blobs, pa.binary()), pa.array([f"{i}.png" for i in range(n)])],
        names=["bytes", "path"])
    return pa.table({"image": image, "label": pa.array(rng.integers(0, 10, n))})


def _step_meeting(row: int, order_args: tuple, steps: int) -> int:
    from dbparallel.training.data_order import DataOrder

    order = DataOrder(*order_args)
    starts = np.cumsum([0] + order.shard_rows)
    for step in range(steps):
        for seg in order.segments(step):
            shards = order.shards_of(seg.epoch, seg.window)
            first = np.cumsum([0] + [order.shard_rows[s] for s in shards])
            for r in seg.rows:
                k = int(np.searchsorted(first, r, side="right") - 1)
                if starts[shards[k]] + r - first[k] == row:
                    return step
    return steps


def _image_folder(root: Path, images: int, classes: int, seed: int) -> None:
    """``images`` random 8x8 grey PNGs in ``root/class_<k>/``, classes taken in turn."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(images):
        folder = root / f"class_{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), mode="L").save(
            folder / f"{i}.png")


def test_encoded_images_and_image_folders_train(tmp_path, capsys) -> None:

    data = _write(_encoded_rows(200), tmp_path / "hf" / "train-00000-of-00001.parquet")
    assert main(["train", TINY, "--local", f"run.dir={tmp_path / 'a'}", "metrics.port=0",
                 "data.source=parquet", f"data.path={data}"]) == 0
    _image_folder(tmp_path / "folder", 60, 3, seed=1)
    assert main(["train", TINY, "--local", f"run.dir={tmp_path / 'b'}", "metrics.port=0",
                 "data.source=image_folder", f"data.path={tmp_path / 'folder'}"]) == 0
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert [r["steps"] for r in report["per_block"]] == [12, 12]
    assert "warning: data.num_classes=10, but the data have 3 classes (class_0, class_1, " \
        "class_2): labels 3..9 never occur" in capsys.readouterr().err


def test_a_corrupt_encoded_image_mid_stream_is_named_and_checkpoints_stay(
        tmp_path, capsys) -> None:
    # a row block 0 meets after its checkpoint of step 5 (row groups of 50, windows of 2)
    args = ([50] * 12, 32, 0, 0, 2)
    bad = next(r for r in range(3, ROWS, 11) if 8 <= _step_meeting(r, args, 19) < 19)
    data = _write(_encoded_rows(ROWS, corrupt=bad), tmp_path / "d.parquet")
    run_dir = tmp_path / "run"
    code = main(["train", TINY, "--local", f"run.dir={run_dir}", "data.source=parquet",
                 f"data.path={data}", "data.validate=false", "data.window_shards=2",
                 "train.steps=19", "train.checkpoint_every=5", "metrics.port=0"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{data} row {bad}: column 'image' is not a readable image" in err
    assert err.count("\n") == 1
    manifest = json.loads((run_dir / "blocks" / "block_0" / "manifest.json").read_text())
    assert manifest["state"] and all((run_dir / e["file"]).is_file() for e in manifest["state"])


def test_a_read_that_fails_to_connect_is_retried_then_called_unreachable(monkeypatch) -> None:
    from dbparallel.errors import DataUnreachable

    monkeypatch.setattr(shard_reader, "RETRIES", (0.0, 0.0))
    attempts = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise OSError("connection reset by peer")
        return "rows"

    assert shard_reader._io(flaky, "s3://b/part-0.parquet") == "rows" and len(attempts) == 3

    def down() -> str:
        raise OSError("503 SlowDown")

    with pytest.raises(DataUnreachable, match="part-0.parquet: 503 SlowDown"):
        shard_reader._io(down, "s3://b/part-0.parquet")  # not bad data: the block asks again

    def gone() -> str:
        raise FileNotFoundError("x")

    with pytest.raises(DataError, match="no such file"):
        shard_reader._io(gone, "part-0.parquet")


def test_evaluation_without_a_test_split_scores_a_bounded_number_of_training_rows(
        tmp_path) -> None:
    from dbparallel.data.shards import TRAIN_EVAL_ROWS
    from dbparallel.data.split_reader import iter_chunks

    index = parquet_index(str(_write(_rows(120), tmp_path / "train.parquet")))
    assert index.eval_split == "train" and index.eval_rows() == min(120, TRAIN_EVAL_ROWS)
    assert index.eval_rows(50) == 50 and index.eval_rows(500) == 120
    chunks = list(iter_chunks(index, "train", 32, limit=50))
    assert [c.table.num_rows for c in chunks] == [32, 18]
    assert chunks[1].offset == 32
    assert pa.concat_tables([c.table for c in chunks]).column("label").to_pylist() == \
        _rows(120).column("label").to_pylist()[:50]


def test_a_renamed_image_folder_resumes(tmp_path, caplog) -> None:
    """An image folder without split folders is one shard whose path is the folder itself:
    renamed with `mv`, its rows are the same and the run goes on."""
    _image_folder(tmp_path / "pets", 40, 2, seed=2)
    common = ["train", TINY, "--local", f"run.dir={tmp_path / 'run'}", "metrics.port=0",
              "data.source=image_folder", "data.num_classes=2", "train.checkpoint_every=2"]
    assert main([*common, f"data.path={tmp_path / 'pets'}", "train.steps=2"]) == 0
    (tmp_path / "pets").rename(tmp_path / "pets_v1")
    with caplog.at_level("WARNING"):
        assert main([*common, f"data.path={tmp_path / 'pets_v1'}", "train.steps=4"]) == 0
    assert f"the data moved from {tmp_path / 'pets'} to {tmp_path / 'pets_v1'}" in caplog.text
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert [r["resumed_from"] for r in report["per_block"]] == [2, 2]
