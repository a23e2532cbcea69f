"""The validation pass's units: consecutive whole shards of one split, every shard once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from dbparallel.data.shards import DataIndex, Shard
from dbparallel.training.data_check import Checked, Unit, check_units

TINY = Path(__file__).resolve().parents[2] / "jobs" / "tiny_cpu.yaml"


def _index(train: list[int], test: list[int]) -> DataIndex:
    def shards(sizes: list[int]) -> tuple[Shard, ...]:
        return tuple(Shard("parquet", "d.parquet", n, row_group=i) for i, n in enumerate(sizes))

    return DataIndex("images", "d", {"train": shards(train), "test": shards(test)})


def test_units_cover_every_shard_once_in_index_order() -> None:
    index = _index([100, 250, 50, 400, 10, 10], [30, 30])
    units = check_units(index, unit_rows=300)
    assert units == [Unit("train", 0, 2, 350), Unit("train", 2, 4, 450),
                     Unit("train", 4, 6, 20), Unit("test", 0, 2, 60)]
    assert sum(u.rows for u in units) == index.num_rows("train") + index.num_rows("test")
    assert check_units(index, unit_rows=10**6) == [Unit("train", 0, 6, 820),
                                                  Unit("test", 0, 2, 60)]
    assert len(check_units(index, unit_rows=1)) == 8  # a shard a unit


def _two_splits(path: Path) -> Path:
    """60 training and 20 test rows of 1x8x8 uint8 pixels, in row groups of 20."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    path.mkdir()
    for split, n in (("train", 60), ("test", 20)):
        pixels = rng.integers(0, 256, (n, 64), dtype=np.uint8)
        pq.write_table(pa.table({
            "image": pa.FixedSizeListArray.from_arrays(pa.array(pixels.ravel()), 64),
            "label": pa.array(rng.integers(0, 10, n))}), path / f"{split}.parquet",
            row_group_size=20)
    return path


def test_data_within_one_units_rows_are_checked_here_whatever_their_splits(tmp_path) -> None:
    """A runner (a Ray cluster's tasks) checks data of more rows than one unit; data of fewer,
    here a train and a test split (two units), are checked in this process."""
    from dbparallel.config import load_config
    from dbparallel.data.parquet_index import parquet_index
    from dbparallel.training.data_check import check_data

    data = _two_splits(tmp_path / "data")
    cfg = load_config([TINY], [f"run.dir={tmp_path / 'run'}", "data.source=parquet",
                               f"data.path={data}"])
    index = parquet_index(str(data))
    asked: list[list[Unit]] = []

    def runner(units: list[Unit]) -> Iterator[Checked]:
        asked.append(units)
        yield from (Checked(u.rows) for u in units)

    assert len(check_units(index, unit_rows=80)) == 2
    result = check_data(cfg, index, force=True, progress=False, run=runner, unit_rows=80)
    assert (result.rows, asked) == (80, [])
    result = check_data(cfg, index, force=True, progress=False, run=runner, unit_rows=79)
    assert result.rows == 80 and [u.split for u in asked[0]] == ["train", "test"]


def test_only_data_every_machine_reads_alike_is_checked_on_a_cluster() -> None:
    from dbparallel.training.data_check import readable_anywhere

    def index(uri: str, **meta) -> DataIndex:
        return DataIndex("images", "d", {"train": (Shard("parquet", uri, 10, row_group=0),)},
                         meta)

    assert readable_anywhere(index("/data/part-0.parquet"))
    assert readable_anywhere(index("s3://bucket/part-0.parquet?region=x"))
    assert not readable_anywhere(index("data/part-0.parquet"))  # relative to the driver
    assert not readable_anywhere(index("/home/me/.cache/d.parquet", cached=True))


def test_a_run_directory_that_would_be_refused_is_found_without_writing(tmp_path) -> None:
    """check_resumable raises what open_run/pin_data would, before the (long) data check, and
    writes nothing into a new run directory."""
    import pytest

    from dbparallel.config import load_config
    from dbparallel.errors import RunDirError
    from dbparallel.training.data_pin import pin_data
    from dbparallel.training.run_dir import check_resumable, open_run

    cfg = load_config([TINY], [f"run.dir={tmp_path / 'run'}"])
    index = _index([100, 250], [30])
    check_resumable(cfg, index)
    assert not (tmp_path / "run").exists()
    storage = open_run(cfg)
    pin_data(storage, index)
    check_resumable(cfg, index)  # the same run: resumable
    other = load_config([TINY], [f"run.dir={tmp_path / 'run'}", "model.depth=4"])
    with pytest.raises(RunDirError, match=r"other values of model.depth \(model.depth: 2 "
                                          r"there, 4 now\)"):
        check_resumable(other, index)
    changed = _index([100, 251], [30])
    check_resumable(cfg, changed)  # no block has a checkpoint yet: it starts on the data now
    with pytest.raises(RunDirError, match="trained on other data"):  # others may train the rest
        check_resumable(cfg, changed, [0])
    from dbparallel.training.checkpoint import BlockCheckpoints

    BlockCheckpoints(storage, 1).save("state", 5, {"step": 5})
    with pytest.raises(RunDirError, match=r"trained on other data .* \(350 training rows then, "
                                          r"351 now"):
        check_resumable(cfg, changed)


def test_other_data_at_another_path_are_refused_naming_the_runs_own(tmp_path) -> None:
    """A resume pointed at another data set (another corpus, another folder) is told where
    the run's own data were, not that the new path's files changed."""
    import dataclasses

    import pytest

    from dbparallel.config import load_config
    from dbparallel.errors import RunDirError
    from dbparallel.training.checkpoint import BlockCheckpoints
    from dbparallel.training.data_pin import pin_data
    from dbparallel.training.run_dir import check_resumable, open_run

    cfg = load_config([TINY], [f"run.dir={tmp_path / 'run'}"])
    storage = open_run(cfg)
    pin_data(storage, dataclasses.replace(_index([100, 250], [30]), source="corpus"))
    BlockCheckpoints(storage, 0).save("state", 5, {"step": 5})
    other = dataclasses.replace(_index([100, 251], [30]), source="other.txt")
    with pytest.raises(RunDirError, match=r"was trained on the data at corpus \(350 training "
                                          r"rows\), and other.txt holds other data \(351\); "
                                          r"resume with data.path=corpus, or choose a new "
                                          r"run.dir"):
        check_resumable(cfg, other)
    same_place = dataclasses.replace(other, source="corpus")
    with pytest.raises(RunDirError, match=r"trained on other data than corpus now holds "
                                          r"\(350 training rows then, 351 now: files added"):
        check_resumable(cfg, same_place)


def test_data_are_pinned_again_only_where_their_pinning_process_has_ended(tmp_path) -> None:
    """A run still starting (its driver waits for room, no lease taken yet) keeps its data;
    one whose driver has gone is started on the data as they are now, vocabulary included."""
    import json
    import subprocess
    import sys

    import pytest

    from dbparallel.errors import RunDirError
    from dbparallel.training.data_pin import pin_data
    from dbparallel.training.holder import this_process
    from dbparallel.training.run_dir import check_resumable
    from dbparallel.training.storage import Storage

    def text(vocab: str, rows: int) -> DataIndex:
        shards = (Shard("tokens", "t.bin", rows),)
        return DataIndex("tokens", "t", {"train": shards}, {"tokenizer": "char", "vocab": vocab})

    storage = Storage(str(tmp_path / "run"))
    storage.makedirs()
    pin_data(storage, text("abc\u00e9", 100))
    pinned = json.loads((tmp_path / "run" / "data_index.json").read_text())
    assert pinned["pinned_by"] == this_process()
    starting = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:  # pinned by another process of this machine that still runs
        (tmp_path / "run" / "data_index.json").write_text(json.dumps(
            {**pinned, "pinned_by": {**this_process(), "pid": str(starting.pid)}}))
        with pytest.raises(RunDirError, match=rf"was started on other data .* by a process "
                                              rf"that may still run \(pid {starting.pid} on "):
            pin_data(storage, text("abc", 101), start=True)
    finally:
        starting.kill()
        starting.wait()
    pin_data(storage, text("abc", 101), start=True)  # it has ended: pinned again
    vocab = json.loads((tmp_path / "run" / "vocab.json").read_text())
    assert vocab == {"vocab": ["a", "b", "c"]}  # the new data's, not the first
    from dbparallel.config import load_config

    cfg = load_config([], [f"run.dir={tmp_path / 'run'}"])
    check_resumable(cfg, text("abc", 101))  # the same data now


def test_every_bad_row_is_named_in_index_order_up_to_the_limit(tmp_path, monkeypatch,
                                                               capsys) -> None:
    """A folder of photos with a few corrupt files names all of them in one check, across
    units and within a chunk; a check stops at MAX_BAD_ROWS and says more may follow."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from dbparallel.cli import main
    from dbparallel.training import data_check

    folder = tmp_path / "pets"
    for name in ("cat", "dog"):
        (folder / name).mkdir(parents=True)
        for n in range(6):
            Image.new("L", (8, 8), 30 * n).save(folder / name / f"{n}.png")
    for bad in ("cat/1.png", "cat/4.png", "dog/0.png"):
        (folder / bad).write_bytes(b"not a png")
    argv = ["data", "check", str(folder), "data.image_size=8", "data.num_classes=2",
            "data.shard_rows=4"]
    monkeypatch.setattr(data_check, "UNIT_ROWS", 4)  # three units of a shard each, here
    assert main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "dbparallel: error: 3 bad rows:"
    named = sorted(line.strip().split(":")[0] for line in err[1:])
    assert named == [str(folder / bad) for bad in ("cat/1.png", "cat/4.png", "dog/0.png")]
    assert all("is not a readable image" in line for line in err[1:])

    labels = np.arange(30) % 10
    labels[[3, 5, 6, 7, 20, 29]] = 12  # six bad labels in one chunk
    table = tmp_path / "t.parquet"
    pq.write_table(pa.table({"image": pa.FixedSizeListArray.from_arrays(
        pa.array(np.zeros(30 * 64, np.uint8)), 64), "label": pa.array(labels)}), table)
    monkeypatch.setattr("dbparallel.errors.MAX_BAD_ROWS", 4)
    assert main(["data", "check", str(table), "data.image_size=8"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "dbparallel: error: the first 4 bad rows (it stops at 4; more may follow):"
    assert [line.split(":")[0].strip() for line in err[1:]] == \
        [f"{table} row {r}" for r in (3, 5, 6, 7)]
    monkeypatch.setattr("dbparallel.errors.MAX_BAD_ROWS", 20)
    assert main(["data", "check", str(table), "data.image_size=8"]) == 2
    assert capsys.readouterr().err.count("has label 12") == 6
    # bad rows of other kinds before the first one a check meets (images are checked before
    # labels, a pixel list's length before its values) are named too, in row order
    images = [[0] * 64] * 30
    images[2], images[5], images[9] = [0] * 10, None, [300] * 64
    labels = np.arange(30) % 10
    labels[1] = 12
    pq.write_table(pa.table({"image": pa.array(images, pa.list_(pa.int64())),
                             "label": pa.array(labels)}), table)
    assert main(["data", "check", str(table), "data.image_size=8"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "dbparallel: error: 4 bad rows:", err
    assert [line.split(":")[0].strip() for line in err[1:]] == \
        [f"{table} row {r}" for r in (1, 2, 5, 9)]
    # every row measured for the footprint bad too: the check names them, 20
    pq.write_table(pa.table({"image": pa.array([[0] * 10] * 30, pa.list_(pa.int64())),
                             "label": pa.array(labels)}), table)
    assert main(["data", "check", str(table), "data.image_size=8"]) == 2
    assert capsys.readouterr().err.startswith("dbparallel: error: the first 20 bad rows ")


def test_rows_are_decoded_past_each_bad_one_in_row_order() -> None:
    """A stand-in decode whose first check (the "image") runs over every row before its
    second (the "label"), as a task's does: each bad row is found, in row order, every good
    row decoded once in a part without a bad row, and it stops at the limit."""
    from dbparallel.data.bad_rows import decode_past_bad_rows
    from dbparallel.errors import RowError

    image_bad, label_bad = {3, 4, 11}, {1, 7}
    calls: list[tuple[int, int]] = []

    def decode(start: int, stop: int) -> list[int]:
        calls.append((start, stop))
        for check in (image_bad, label_bad):
            for row in range(start, stop):
                if row in check:
                    raise RowError(row - start, "image" if check is image_bad else "label",
                                   "is bad")
        return list(range(start, stop))

    parts, bad = decode_past_bad_rows(decode, 14, 20)
    assert [row for row, _ in bad] == [1, 3, 4, 7, 11]
    assert [err.column for _, err in bad] == ["label", "image", "image", "label", "image"]
    assert [r for _, _, rows in parts for r in rows] == [0, 2, 5, 6, 8, 9, 10, 12, 13]
    assert all(list(range(a, b)) == rows for a, b, rows in parts)
    parts, bad = decode_past_bad_rows(decode, 14, 2)
    assert [row for row, _ in bad] == [1, 3]
    assert decode_past_bad_rows(decode, 0, 20) == ([], [])


def test_data_pinned_by_another_process_since_it_looked_are_checked_not_replaced(
        tmp_path) -> None:
    """A --block process that finds no data_index.json, then another one of the same new run
    pins its data (other rows) before it writes: it is refused, and the pin kept."""
    import json

    import pytest

    from dbparallel.config import load_config
    from dbparallel.errors import RunDirError
    from dbparallel.training.data_pin import DATA_INDEX_FILE, pin_data
    from dbparallel.training.run_dir import open_run

    storage = open_run(load_config([TINY], [f"run.dir={tmp_path / 'run'}"]))
    pin_data(storage, _index([100, 250], [30]))
    before = (tmp_path / "run" / DATA_INDEX_FILE).read_bytes()
    exists, looked = storage.exists, []

    def looked_before_it(rel: str) -> bool:  # its first look came before the other's pin
        if rel == DATA_INDEX_FILE and not looked:
            looked.append(rel)
            return False
        return exists(rel)
    storage.exists = looked_before_it
    with pytest.raises(RunDirError, match="trained on other data"):
        pin_data(storage, _index([100, 251], [30]))
    assert (tmp_path / "run" / DATA_INDEX_FILE).read_bytes() == before
    assert json.loads(before)["pinned_by"]
