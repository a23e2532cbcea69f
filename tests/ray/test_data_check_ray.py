"""The validation pass as Ray tasks on a real local instance: every row counted, the same
bad rows named as on the driver, and a bad row stops `train` before its run directory exists."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dbparallel.cli import main
from dbparallel.config import load_config
from dbparallel.data.parquet_index import parquet_index
from dbparallel.errors import DataError
from dbparallel.training import data_check

pytestmark = pytest.mark.ray
RECIPE = Path(__file__).resolve().parents[2] / "jobs" / "tiny_cpu.yaml"


def _data(path: Path, bad_labels_at: tuple[int, ...] = ()) -> Path:
    """3,000 rows of 1x8x8 uint8 pixels in row groups of 100, two files."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 3000)
    labels[list(bad_labels_at)] = 12
    pixels = rng.integers(0, 256, (3000, 64), dtype=np.uint8)
    path.mkdir(parents=True)
    for i in range(2):
        part = slice(i * 1500, (i + 1) * 1500)
        pq.write_table(pa.table({
            "image": pa.FixedSizeListArray.from_arrays(pa.array(pixels[part].ravel()), 64),
            "label": pa.array(labels[part])}), path / f"part-{i}.parquet", row_group_size=100)
    return path


def _cfg(data: Path, run_dir: Path):
    return load_config([RECIPE], [f"run.dir={run_dir}", "data.source=parquet",
                                  f"data.path={data}"])


def test_tasks_check_every_row_once_and_remember_it(ray_session, tmp_path, monkeypatch) -> None:
    from dbparallel.runtime.data_check_ray import ray_units

    monkeypatch.setattr(data_check, "UNIT_ROWS", 400)  # 8 units of 4 row groups
    data = _data(tmp_path / "data")
    cfg, index = _cfg(data, tmp_path / "run"), parquet_index(str(data))
    units = data_check.check_units(index)
    assert [u.rows for u in units] == [400] * 7 + [200]
    seen: list[data_check.Checked] = []
    runner = ray_units(cfg, index)
    result = data_check.check_data(cfg, index, progress=False,
                                   run=lambda us: (seen.append(r) or r for r in runner(us)))
    assert (result.rows, result.cached, result.classes) == (3000, False, 10)
    assert sorted(c.rows for c in seen) == sorted(u.rows for u in units)
    again = data_check.check_data(cfg, index, progress=False, run=runner)
    assert (again.cached, again.classes) == (True, 10)  # the labels seen are remembered


def test_tasks_name_the_first_bad_row_in_index_order(ray_session, tmp_path, monkeypatch) -> None:
    from dbparallel.runtime.data_check_ray import ray_units

    monkeypatch.setattr(data_check, "UNIT_ROWS", 300)
    data = _data(tmp_path / "data", bad_labels_at=(2950, 1720, 2210))  # units 5, 7, 9
    cfg, index = _cfg(data, tmp_path / "run"), parquet_index(str(data))
    with pytest.raises(DataError) as here:
        data_check.check_data(cfg, index, progress=False)
    with pytest.raises(DataError) as there:
        data_check.check_data(cfg, index, progress=False, run=ray_units(cfg, index))
    assert str(there.value) == str(here.value)
    named = str(there.value).splitlines()
    assert named[0] == "3 bad rows:"
    assert [line.split(": column")[0].strip() for line in named[1:]] == \
        [f"{data / 'part-1.parquet'} row {r}" for r in (220, 710, 1450)]
    monkeypatch.setattr("dbparallel.errors.MAX_BAD_ROWS", 2)  # the tasks list more: the same two
    with pytest.raises(DataError) as here:
        data_check.check_data(cfg, index, progress=False)
    with pytest.raises(DataError) as there:
        data_check.check_data(cfg, index, progress=False, run=ray_units(cfg, index))
    assert str(there.value) == str(here.value)
    assert str(there.value).startswith("the first 2 bad rows (it stops at 2; more may follow)")
    assert "row 220" in str(there.value) and "row 710" in str(there.value)


def test_a_bad_row_stops_train_on_ray_before_the_run_directory_exists(
        ray_session, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(data_check, "UNIT_ROWS", 500)
    data = _data(tmp_path / "data", bad_labels_at=(2601,))
    run_dir = tmp_path / "run"
    assert main(["train", str(RECIPE), f"run.dir={run_dir}", "data.source=parquet",
                 f"data.path={data}"]) == 2
    err = capsys.readouterr().err
    assert "part-1.parquet row 1101: column 'label' has label 12" in err
    assert not run_dir.exists()  # no config, no pinned data: a fixed data set starts afresh


def test_data_only_the_driver_sees_is_checked_by_the_driver(ray_session, tmp_path) -> None:
    from dbparallel.data.sources import open_data
    from dbparallel.runtime.data_check_ray import cluster_units

    # (an absolute path gets a runner only while a CPU is free: other tests' actors may hold
    # them, so that side is tested on readable_anywhere, tests/unit/test_data_check_units.py)
    digits = load_config([RECIPE], [f"run.dir={tmp_path / 'run'}"])
    assert cluster_units(digits, open_data(digits.data)) is None  # in this machine's cache


def test_a_refused_run_directory_is_named_before_the_data_are_checked(
        ray_session, tmp_path, capsys) -> None:
    data = _data(tmp_path / "data", bad_labels_at=(2601,))
    from dbparallel.training.checkpoint import BlockCheckpoints
    from dbparallel.training.run_dir import open_run

    run_dir = tmp_path / "run"
    storage = open_run(load_config([RECIPE], [f"run.dir={run_dir}", "data.source=parquet",
                                              f"data.path={data}", "model.depth=4"]))
    BlockCheckpoints(storage, 0).save("state", 1, {"step": 1})  # another net, trained
    assert main(["train", str(RECIPE), f"run.dir={run_dir}", "data.source=parquet",
                 f"data.path={data}"]) == 2
    err = capsys.readouterr().err
    assert "holds blocks trained with other values of model.depth (" in err
    assert "label 12" not in err  # the run directory first, then (not here) the rows


def _within(seconds: float, call):
    """``call()``'s result or exception; a failed test instead of a hang if it takes longer."""
    import threading

    out: dict = {}

    def body() -> None:
        try:
            out["value"] = call()
        except BaseException as err:  # noqa: BLE001 (raised again below)
            out["error"] = err

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still waiting after {seconds:g} s"
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_a_cluster_that_runs_no_task_leaves_the_pass_to_the_driver(
        ray_session, tmp_path, monkeypatch, capsys) -> None:
    """Tasks that no node can run (they need a resource no node has, as when other jobs hold
    every CPU): the driver checks the units itself, from the last, and still names the first
    bad row in index order, instead of waiting for a CPU for ever."""
    import ray

    from dbparallel.runtime import data_check_ray

    stuck = ray.remote(num_returns="streaming", resources={"dbparallel_test_nowhere": 1})(
        data_check_ray._check._function)
    monkeypatch.setattr(data_check_ray, "_check", stuck)
    monkeypatch.setattr(data_check, "UNIT_ROWS", 300)  # 10 units of 3 row groups
    good = _data(tmp_path / "good")
    cfg, index = _cfg(good, tmp_path / "run"), parquet_index(str(good))
    result = _within(120, lambda: data_check.check_data(
        cfg, index, progress=False, run=data_check_ray.ray_units(cfg, index, patience=0.2)))
    assert (result.rows, result.cached) == (3000, False)
    assert "no unit of the check began or ended in 0.2 s (is the cluster full?); the driver " \
        "checks units while the tasks are silent" in capsys.readouterr().out
    bad = _data(tmp_path / "bad", bad_labels_at=(2950, 1720, 2210))  # units 9, 5, 7
    cfg, index = _cfg(bad, tmp_path / "run"), parquet_index(str(bad))
    with pytest.raises(DataError) as err:
        _within(120, lambda: data_check.check_data(
            cfg, index, progress=False, run=data_check_ray.ray_units(cfg, index, patience=0.2)))
    assert "part-1.parquet row 220: column 'label' has label 12" in str(err.value)


def _tasks(monkeypatch, body) -> list:
    """Check tasks running ``body(cfg, index, unit)`` (a generator) at a hundredth of a CPU
    each, so that every unit begins whatever other tests hold; the units the driver takes."""
    import ray

    from dbparallel.runtime import data_check_ray

    monkeypatch.setattr(data_check_ray, "_check", ray.remote(num_returns="streaming")(body))
    monkeypatch.setattr(data_check_ray, "TASK_CPUS", 0.01)
    taken: list = []
    real = data_check_ray.check_unit
    monkeypatch.setattr(data_check_ray, "check_unit",
                        lambda *a, **k: taken.append(a[2]) or real(*a, **k))
    return taken


def test_units_a_worker_has_begun_are_left_to_it(ray_session, tmp_path, monkeypatch,
                                                 capsys) -> None:
    """Units silent far longer than the patience, all begun: the driver waits for them.
    The driver's clock stands still until it has heard both units begin (however long the
    workers take to start), then jumps 10 s, twice the patience; the units end only after
    the driver has looked at the clock again."""
    import ray

    from dbparallel.runtime import data_check_ray

    go = tmp_path / "go"

    def held(cfg, index, unit):
        yield data_check_ray.STARTED
        rows = data_check.check_unit(cfg, index, unit)
        deadline = time.monotonic() + 300  # a hang guard, far past any start-up
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        yield rows

    heard, real_get = [], ray.get

    def get(*args, **kwargs):  # counts the STARTED the driver has received
        value = real_get(*args, **kwargs)
        heard.extend([value] if value == data_check_ray.STARTED else [])
        return value

    start = time.monotonic()

    def clock() -> float:
        if len(heard) < 2:
            return start  # still: the workers may take as long as they need to begin
        go.touch()  # the driver looks at a clock 10 s on: then the units may end
        return start + 10

    monkeypatch.setattr(ray, "get", get)
    taken = _tasks(monkeypatch, held)
    monkeypatch.setattr(data_check, "UNIT_ROWS", 1500)  # 2 units
    data = _data(tmp_path / "data")
    cfg, index = _cfg(data, tmp_path / "run"), parquet_index(str(data))
    result = data_check.check_data(cfg, index, progress=False, run=data_check_ray.ray_units(
        cfg, index, patience=5, clock=clock))
    assert result.rows == 3000 and taken == [] and go.exists()
    assert "the driver checks" not in capsys.readouterr().out


def test_units_begun_on_a_node_that_went_silent_are_taken(ray_session, tmp_path, monkeypatch,
                                                          capsys) -> None:
    """Tasks that begin and are never heard of again (a lost node whose retry cannot be
    placed): after lost_after seconds the driver checks their units and drops the tasks."""
    from dbparallel.runtime import data_check_ray

    def lost(cfg, index, unit):
        yield data_check_ray.STARTED
        time.sleep(600)
        yield 0

    taken = _tasks(monkeypatch, lost)
    monkeypatch.setattr(data_check, "UNIT_ROWS", 1500)  # 2 units
    data = _data(tmp_path / "data", bad_labels_at=(2210,))
    cfg, index = _cfg(data, tmp_path / "run"), parquet_index(str(data))
    with pytest.raises(DataError, match="part-1.parquet row 710"):
        _within(120, lambda: data_check.check_data(
            cfg, index, progress=False,
            run=data_check_ray.ray_units(cfg, index, patience=60, lost_after=2.0)))
    assert [u.first for u in taken] == [15, 0]  # the last unit first
    assert "no task was heard of in 2 s (a node lost?)" in capsys.readouterr().out
