"""Metric recording and the local HTTP endpoint (a real scrape of prometheus_client)."""

from __future__ import annotations

import os
import re
import signal
import socket
import urllib.request
from pathlib import Path

import pytest

from dbparallel.errors import UserError
from dbparallel.runtime.metric_specs import (
    ALL_METRICS,
    ASSEMBLY_PREFIX,
    BLOCK_METRICS,
    SPEC,
    exported_name,
    exported_names,
)
from dbparallel.runtime.metrics import (
    AssemblyRecorder,
    BlockRecorder,
    MemorySink,
    PrometheusSink,
    RaySink,
    series_line,
)
from dbparallel.runtime.metrics_port import PORT_TRIES, free_port, port_line
from dbparallel.training.block_trainer import StepStats

ID = "3f9a1c2b7d4e"  # a run directory's id (training/run_id.py)
R0, R1 = ({"run": "r", "run_id": "a1", "block": b} for b in "01")  # a block's labels


class _Trainer:
    memory = None
    heldout_loss: float | None = None  # not measured yet
    model_flops_per_step = None  # not counted yet
    peak_tflops = None  # the CPU


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_recorder_counts_steps_and_nonfinite() -> None:
    sink = MemorySink()
    rec = BlockRecorder("r", "a1", 1, (0.1, 0.5), sink)
    rec.record(StepStats(1, 0.75, True, 0.5, 32), _Trainer())
    rec.record(StepStats(2, float("nan"), False, 0.25, 32), _Trainer())
    assert sink.get("dbparallel_block_steps", **R1) == 2
    assert sink.get("dbparallel_block_loss", **R1) == 0.75  # NaN not exported
    assert sink.get("dbparallel_block_nonfinite_steps", **R1) == 1
    assert sink.get("dbparallel_block_samples_per_second", **R1) == 128
    assert sink.get("dbparallel_block_sigma_high", **R1) == 0.5
    assert sink.get("dbparallel_block_heldout_loss", **R1) is None
    measured = _Trainer()
    measured.heldout_loss = 0.8
    rec.record(StepStats(3, 0.7, True, 0.25, 32), measured)
    assert sink.get("dbparallel_block_heldout_loss", **R1) == 0.8


def test_the_data_wait_ratio_is_the_share_of_a_steps_time_spent_waiting() -> None:
    sink = MemorySink()
    rec = BlockRecorder("r", "a1", 0, None, sink)
    rec.record(StepStats(1, 0.5, True, 0.75, 8), _Trainer())  # no wait: the data kept up
    assert sink.get("dbparallel_block_data_wait_ratio", **R0) == 0.0
    rec.record(StepStats(2, 0.5, True, 0.75, 8, data_wait_s=0.25), _Trainer())
    assert sink.get("dbparallel_block_data_wait_ratio", **R0) == 0.25


def test_a_resumed_block_starts_its_counters_at_the_run_totals() -> None:
    sink = MemorySink()  # as a restarted actor (plain or a replica group's rank 0) does
    BlockRecorder("r", "a1", 1, (0.1, 0.5), sink).resumed(restarts=2, nonfinite_steps=3)
    assert sink.get("dbparallel_block_restarts", **R1) == 2
    assert sink.get("dbparallel_block_nonfinite_steps", **R1) == 3


def test_exported_names_follow_ray_conventions() -> None:
    names = exported_names()
    assert "ray_dbparallel_block_loss" in names
    assert "ray_dbparallel_block_steps_total" in names  # counters gain _total
    assert "ray_dbparallel_assembly_sample_accuracy" in names
    assert len(names) == len(ALL_METRICS)


def _documented_metrics() -> dict[str, tuple[str, tuple[str, ...]]]:
    """{exported name: (kind, labels)} of docs/metrics.md's table of metrics."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    rows = re.findall(r"^\| `(ray_dbparallel_\w+)` \| (\w+) \| ([^|]+) \|", text, re.M)
    assert len(rows) == len({name for name, _, _ in rows}), "a metric listed twice"
    return {name: (kind, tuple(re.findall(r"`(\w+)`", labels))) for name, kind, labels in rows}


def test_docs_list_every_exported_metric_with_its_kind_and_labels() -> None:
    documented = _documented_metrics()
    exported = {exported_name(s): (s.kind, s.tag_keys) for s in ALL_METRICS}
    assert set(documented) == set(exported), (set(exported) ^ set(documented))
    assert documented == exported


def test_units_and_kinds_follow_prometheus_conventions() -> None:
    for spec in ALL_METRICS:
        base = spec.name
        assert re.fullmatch(r"dbparallel_[a-z_]+", base), base
        assert not base.endswith(("_total", "_count", "_sum", "_bucket")), base  # added
        assert not re.search(r"_(ms|milliseconds|minutes|hours|mib|gib|kb|mb|gb)(_|$)", base), \
            base  # base units: seconds, bytes
        if "time" in base:
            assert base.endswith("_seconds"), base
        if "memory" in base:
            assert base.endswith("_bytes"), base


def test_the_text_tasks_likelihood_and_generation_scores_are_gauges() -> None:
    """AR's and looped's likelihood (bpc_sigma_max) and gen_ppl, beside the sampler's bpc."""
    sink = MemorySink()
    AssemblyRecorder("r", "a1", sink).record({"bpc": 2.5, "bpc_sigma_max": 1.9, "gen_ppl": 7.0})
    got = {key: sink.get(f"dbparallel_assembly_{key}", run="r", run_id="a1")
           for key in ("bpc", "bpc_sigma_max", "gen_ppl")}
    assert got == {"bpc": 2.5, "bpc_sigma_max": 1.9, "gen_ppl": 7.0}


def test_every_assembly_metric_curves_png_draws_is_exported() -> None:
    """What a run's curves.png draws of its composed network (training/curves.py), Prometheus
    gets too, so the dashboard shows it: a text chain's likelihood (bpc_sigma_max; its bpc
    measures the sampler) and its samples' perplexity and entropy as much as a DiT's FID."""
    from dbparallel.training.curves import assembly_panels

    lines = [
        {"step": 4, "sample_accuracy": 0.5, "fd_indomain": 3.0, "classifier_accuracy": 0.99,
         "fid": 80.0, "kid": 0.1, "kid_std": None, "fid_samples": 64, "wall_s": 2.0},
        {"step": 4, "accuracy": 0.8, "eval_rows": 100, "eval_on_test": 1},
        {"step": 4, "bpc": 7.0, "bpc_sigma_max": 7.0, "eval_on_test": 1.0, "gen_ppl": 128.0,
         "sample_entropy": 2.9, "data_ppl": 127.9, "data_entropy": 2.7, "wall_s": 9.1},
    ]
    drawn = {metric for line in lines for metric, _ in assembly_panels([line])}
    assert drawn == {"sample_accuracy", "fd_indomain", "fid", "kid", "accuracy", "bpc",
                     "bpc_sigma_max", "gen_ppl", "sample_entropy"}
    assert not {m for m in drawn if ASSEMBLY_PREFIX + m not in SPEC}


def test_local_endpoint_serves_every_recorded_series() -> None:
    sink = PrometheusSink()
    port = _free_port()
    server, served = sink.serve(port)
    assert served == port
    try:
        BlockRecorder("run1", ID, 0, (0.3, 80.0), sink).record(
            StepStats(1, 0.5, True, 0.1, 8), _Trainer())
        AssemblyRecorder("run1", ID, sink).record({"sample_accuracy": 0.9, "unexported": 1.0})
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        text = text.decode()
    finally:
        server.shutdown()
    spec = {s.name: s for s in ALL_METRICS}  # the names a Ray run exports: one dashboard
    loss = exported_name(spec["dbparallel_block_loss"])
    steps = exported_name(spec["dbparallel_block_steps"])
    assert (loss, steps) == ("ray_dbparallel_block_loss", "ray_dbparallel_block_steps_total")
    assert f'{loss}{{block="0",run="run1",run_id="{ID}"}} 0.5' in text
    assert f'{steps}{{block="0",run="run1",run_id="{ID}"}} 1.0' in text
    assert f'ray_dbparallel_assembly_sample_accuracy{{run="run1",run_id="{ID}"}} 0.9' in text
    assert "unexported" not in text


def test_every_series_names_its_run_by_name_and_id_and_no_more() -> None:
    for spec in ALL_METRICS:  # no per-process or per-step label
        want = ("run", "run_id", "block") if spec.name.startswith("dbparallel_block_") \
            else ("run", "run_id")
        assert spec.tag_keys == want, spec.name


def test_two_runs_of_one_name_are_scraped_as_series_apart() -> None:
    """An earlier run of the recipe (its counters still exported, as Ray keeps a dead
    worker's) and this one: one run.name, two run directories' ids."""
    old = "0123456789ab"
    sink = PrometheusSink()
    port = _free_port()
    server, _ = sink.serve(port)
    try:
        BlockRecorder("tiny-cpu", old, 0, None, sink).resumed(restarts=5, nonfinite_steps=2)
        new = BlockRecorder("tiny-cpu", ID, 0, None, sink)
        new.resumed(restarts=1, nonfinite_steps=0)
        new.record(StepStats(1, 0.5, True, 0.1, 8), _Trainer())
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        text = text.decode()
    finally:
        server.shutdown()

    def series(name: str) -> dict[str, float]:
        return {labels: float(value) for labels, value in
                re.findall(rf"^{name}\{{([^}}]*)\}} (\S+)$", text, re.M)}

    run = 'block="0",run="tiny-cpu",run_id='
    assert series("ray_dbparallel_block_restarts_total") == {f'{run}"{old}"': 5.0,
                                                             f'{run}"{ID}"': 1.0}
    assert series("ray_dbparallel_block_nonfinite_steps_total") == {f'{run}"{old}"': 2.0}
    assert series("ray_dbparallel_block_step_time_seconds") == {f'{run}"{ID}"': 0.1}


def test_a_run_prints_its_labels_as_a_selector() -> None:
    assert series_line("tiny-cpu", ID) == \
        f'metrics: this run\'s series: ray_dbparallel_*{{run="tiny-cpu",run_id="{ID}"}}'
    assert series_line('a "b" ö', ID).endswith(f'{{run="a \\"b\\" ö",run_id="{ID}"}}')


def test_a_busy_port_moves_to_a_free_one_after_it_or_names_the_key() -> None:
    """Two processes on one host (blocks trained with --local --block) serve on two ports."""
    with socket.socket() as s:
        s.bind(("", 0))
        s.listen()
        busy = s.getsockname()[1]
        moved = free_port(busy)
        assert busy < moved < busy + PORT_TRIES
        with socket.socket() as t:
            t.bind(("", moved))  # it is free
        assert port_line(busy, moved) == \
            f"metrics: http://127.0.0.1:{moved}/metrics ({busy} is in use)"
        with pytest.raises(UserError, match=f"metrics.port: ports {busy} to {busy} are in use"):
            free_port(busy, tries=1)
        server, served = PrometheusSink().serve(busy)  # binds the first free one itself
        try:
            assert busy < served < busy + PORT_TRIES
        finally:
            server.shutdown()


def test_a_finished_block_stops_exporting_its_gauges_and_keeps_its_counters() -> None:
    # A --local run that goes on to its next block drops the done block's gauges, as a Ray
    # worker's gauges go when it ends (its counters stay, as Ray keeps a dead worker's): kept,
    # the dashboard's "all blocks" samples/s and TFLOP/s added a done block's last value to the
    # live one's, and the alerts read its step time as "a process trains the block".
    class Measured(_Trainer):
        heldout_loss = 0.4
        model_flops_per_step = 1e9
        peak_tflops = 100.0

    sink = PrometheusSink()
    port = _free_port()
    server, _ = sink.serve(port)
    try:
        recorder = BlockRecorder("run1", ID, 0, (0.3, 80.0), sink)
        recorder.record(StepStats(1, 0.5, True, 0.1, 8), Measured())
        BlockRecorder("run1", ID, 1, (0.1, 0.3), sink).record(StepStats(1, 0.7, True, 0.2, 8),
                                                               _Trainer())
        recorder.finished()
        recorder.finished()  # (nothing left to drop: no error)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        text = text.decode()
    finally:
        server.shutdown()
    labels = f'run="run1",run_id="{ID}"'
    block0 = [ln for ln in text.splitlines() if f'{{block="0",{labels}}}' in ln]
    assert sorted(ln.split("{")[0] for ln in block0) == [
        "ray_dbparallel_block_steps_created", "ray_dbparallel_block_steps_total"]
    assert f'ray_dbparallel_block_steps_total{{block="0",{labels}}} 1.0' in text
    assert f'ray_dbparallel_block_step_time_seconds{{block="1",{labels}}} 0.2' in text
    assert f'ray_dbparallel_block_samples_per_second{{block="1",{labels}}} 40.0' in text
    assert f'ray_dbparallel_block_loss{{block="1",{labels}}} 0.7' in text
    memory = MemorySink()
    recorder = BlockRecorder("run1", ID, 0, (0.3, 80.0), memory)
    recorder.record(StepStats(1, 0.5, True, 0.1, 8), Measured())
    recorder.record(StepStats(2, float("nan"), False, 0.1, 8), Measured())
    recorder.finished()
    left = {name for (name, _) in memory.values}
    assert left == {"dbparallel_block_steps", "dbparallel_block_nonfinite_steps"}
    assert {spec.name for spec in BLOCK_METRICS if spec.kind == "gauge"} & left == set()


def test_a_child_forked_while_the_gauge_thread_holds_the_sink_uses_it_without_a_hang() -> None:
    # the keep-alive thread holds the sink's lock while it sets the gauges again: a child
    # forked then (a DataLoader worker, a subprocess) got the lock held, and no thread to
    # release it, so its first drop() or set() hung forever
    sink = RaySink()
    spec = ALL_METRICS[0]
    with sink._lock:  # as the keep-alive thread holds it, mid-tick
        pid = os.fork()
        if pid == 0:  # the child: leaves at once, whatever happens
            try:
                signal.alarm(30)  # a guard only: a hang ends the child with SIGALRM
                sink.drop(spec, {k: "0" for k in spec.tag_keys})
                sink.close()
                os._exit(0)
            finally:
                os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0  # -14: SIGALRM, the child hung


def test_a_local_run_starts_a_resumed_blocks_counters_at_the_run_totals(tmp_path,
                                                                        monkeypatch) -> None:
    # A --local process that resumes a block (after a crash, or a Ray run's restarts) serves
    # its counters under the same labels: they go on from the checkpoint's totals, as a
    # restarted Ray actor's do, or the NaN/Inf alert would go quiet on a resume.
    from pathlib import Path

    from dbparallel.config import load_config
    from dbparallel.runtime import local
    from dbparallel.training.checkpoint import BlockCheckpoints
    from dbparallel.training.loop import BlockRun
    from dbparallel.training.run_id import ensure_run_id
    from dbparallel.training.storage import Storage

    tiny = Path(__file__).resolve().parents[2] / "jobs" / "tiny_cpu.yaml"

    def cfg(steps: int):
        return load_config([tiny], [f"run.dir={tmp_path / 'run'}", f"train.steps={steps}",
                                    "train.warmup_steps=1", "run.curves=false"])

    local.run_local(cfg(2), progress=False, only_blocks=[0])
    storage = Storage(cfg(2).run_dir)
    for _ in range(2):
        BlockCheckpoints(storage, 0).record_restart()

    class SkippedBefore(BlockRun):  # as if its checkpoint had counted 3 skipped steps
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.trainer.nonfinite_steps = 3

    sinks: list[MemorySink] = []
    monkeypatch.setattr(local, "BlockRun", SkippedBefore)
    monkeypatch.setattr(local, "MemorySink", lambda: sinks.append(MemorySink()) or sinks[-1])
    local.run_local(cfg(4), progress=False, only_blocks=[0])
    (sink,) = sinks
    tags = {"run": cfg(4).run.name, "run_id": ensure_run_id(storage), "block": "0"}
    assert sink.get("dbparallel_block_steps", **tags) == 2  # this process's steps
    assert sink.get("dbparallel_block_nonfinite_steps", **tags) == 3
    assert sink.get("dbparallel_block_restarts", **tags) == 2
