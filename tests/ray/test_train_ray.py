"""End-to-end runs of jobs/tiny_cpu.yaml on a real local Ray instance."""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import torch

import dbparallel
from dbparallel.config import load_config

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "jobs" / "tiny_cpu.yaml"
SCRAPED = {f"ray_dbparallel_block_{m}" for m in
           ("loss", "steps_total", "sigma_low", "sigma_high", "memory_bytes")}


def _train(run_dir: Path, *overrides: str, local: bool = False) -> dict:
    cfg = load_config([RECIPE], [f"run.dir={run_dir}", *overrides])
    if local:
        from dbparallel.runtime.local import run_local

        return run_local(cfg, None, progress=False)
    from dbparallel.runtime.launch import run_ray

    return run_ray(cfg, None, progress=False)


# (the run's state, report.json written) at the last moment of each of ray_run's driver's
# assembling.json records
ASSEMBLY_ENDS: list[tuple[str, bool]] = []


@pytest.fixture(scope="module")
def ray_run(ray_session, tmp_path_factory) -> tuple[Path, dict]:
    import dbparallel.runtime.launch as launch

    run_dir = tmp_path_factory.mktemp("ray") / "run"
    record = launch.assembling

    @contextlib.contextmanager
    def watched(*args, **kwargs):
        with record(*args, **kwargs):
            yield
            ASSEMBLY_ENDS.append((dbparallel.status(run_dir).state,
                                  (run_dir / "report.json").exists()))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(launch, "assembling", watched)
        return run_dir, _train(run_dir, "run.curves=true")


def test_report_and_files(ray_run) -> None:
    run_dir, report = ray_run
    on_disk = json.loads((run_dir / "report.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    assert report["task"] == "dit" and report["blocks"] == 2
    assert len(report["partition"]) == 2
    assert report["partition"][0][1] == 80.0 and report["partition"][1][0] == 0.002
    assert [row["block"] for row in report["per_block"]] == [0, 1]
    for row in report["per_block"]:
        assert row["steps"] == 12 and row["restarts"] == 0
        assert 0 < row["final_loss"] < 100 and row["peak_memory_bytes"] > 0
    assert set(report["assembly"]) >= {"sample_accuracy", "fd_indomain"}
    assert 0 <= report["assembly"]["sample_accuracy"] <= 1
    assert report["wall_time_s"] > 0
    assert (run_dir / "config.yaml").is_file()
    png = (run_dir / "samples.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    for b in range(2):
        manifest = json.loads((run_dir / f"blocks/block_{b}/manifest.json").read_text())
        assert manifest["snapshot"][-1]["step"] == 12 and manifest["state"][-1]["step"] == 12
        # what a rerun that trains nothing reports: the block actor kept it at its last step
        measured = json.loads((run_dir / f"blocks/block_{b}/measured.json").read_text())
        row = report["per_block"][b]
        assert measured["data_memory_bytes"] == row["data_memory_bytes"] > 0
        assert measured["model_flops_per_step"] == row["model_flops_per_step"] > 0
        assert measured["heldout_loss"] == row["heldout_loss"] > 0


def test_report_json_is_written_before_the_driver_s_assembly_record_goes(ray_run) -> None:
    """No moment in which the blocks are done, the record gone and report.json not yet
    written (status would read ``trained, not yet assembled``)."""
    run_dir, _ = ray_run
    assert ASSEMBLY_ENDS == [("being assembled", True)]
    assert dbparallel.status(run_dir).state == "finished"


def test_ray_names_the_actors_by_their_run_and_block(ray_run) -> None:
    """`ray list actors --detail` (and each actor's log prefix) names the run and the block of
    each actor, which are not named actors: their repr."""
    import ray
    from ray.util.state import list_actors

    here = ray.get_runtime_context().gcs_address  # not whichever instance started last

    def names(cls: str) -> set[str]:  # of this session's runs, those gone too
        return {a.repr_name for a in list_actors(address=here, detail=True, limit=10_000,
                                                 filters=[("class_name", "=", cls)])}

    assert names("BlockActor") >= {"BlockActor(run=tiny-cpu, block=0)",
                                   "BlockActor(run=tiny-cpu, block=1)"}
    assert "AssemblerActor(run=tiny-cpu)" in names("AssemblerActor")


def test_history_and_curves_of_a_ray_run(ray_run) -> None:
    """Block actors write their metrics.jsonl, the driver assembly.jsonl and curves.png."""
    run_dir, report = ray_run
    for b, row in enumerate(report["per_block"]):
        lines = [json.loads(line) for line in
                 (run_dir / f"blocks/block_{b}/metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in lines] == [4, 8, 12]
        assert lines[-1]["loss"] == row["final_loss"]
        assert lines[-1]["heldout_loss"] == row["heldout_loss"]  # the block actor's, at 12
    assemblies = [json.loads(line) for line in
                  (run_dir / "assembly.jsonl").read_text().splitlines()]
    assert assemblies[-1]["step"] == 12
    assert assemblies[-1]["sample_accuracy"] == report["assembly"]["sample_accuracy"]
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_same_result_in_ray_twice_and_locally(ray_run, scraped_run, tmp_path) -> None:
    """The run scraped below is the second: the same recipe, another run.name."""
    run_dir, report = ray_run
    _, again = scraped_run
    local = _train(tmp_path / "local", local=True)
    losses = [row["final_loss"] for row in report["per_block"]]
    assert losses == [row["final_loss"] for row in again["per_block"]]
    assert losses == [row["final_loss"] for row in local["per_block"]]
    for b in range(2):
        name = f"blocks/block_{b}/snapshot_00000012.pt"
        a = torch.load(run_dir / name, weights_only=True)["ema"]
        c = torch.load(tmp_path / "local" / name, weights_only=True)["ema"]
        assert all(torch.equal(a[k], c[k]) for k in a)


def test_more_blocks_than_slots_train_in_waves_to_the_same_weights(ray_session,
                                                                   tmp_path) -> None:
    """B=4 with room for 2 at a time: blocks 2 and 3 start when 0 and 1 finish, and every
    block ends with the weights of B=4 trained without Ray (which the test above shows equal
    to B blocks trained at once on Ray)."""
    four = ["model.blocks=4", "model.depth=4", "train.steps=6", "train.checkpoint_every=6",
            "runtime.cpus_per_block=0.25"]
    waves = _train(tmp_path / "waves", *four, "runtime.max_concurrent_blocks=2")
    at_once = _train(tmp_path / "at_once", *four, local=True)
    assert waves["concurrent_blocks"] == 2
    rows = waves["per_block"]
    assert [row["slot"] for row in rows] == [0, 1, 0, 1] or [row["slot"] for row in rows] == \
        [0, 1, 1, 0]
    assert min(r["started_s"] for r in rows[2:]) >= min(r["finished_s"] for r in rows[:2])
    assert [r["final_loss"] for r in rows] == [r["final_loss"] for r in at_once["per_block"]]
    for b in range(4):
        name = f"blocks/block_{b}/snapshot_00000006.pt"
        a = torch.load(tmp_path / "waves" / name, weights_only=True)["ema"]
        c = torch.load(tmp_path / "at_once" / name, weights_only=True)["ema"]
        assert all(torch.equal(a[k], c[k]) for k in a)
    assert waves["assembly"] == at_once["assembly"]


def _scrape(port: int, run: str) -> dict[tuple[str, str, str], float]:
    """{(metric, block, run_id): value} of the block series of the runs named ``run`` on the
    node's metrics port."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    series: dict[tuple[str, str, str], float] = {}
    for name, labels, value in re.findall(r"^(ray_dbparallel_block_\w+)\{([^}]*)\} (\S+)$",
                                          text, re.M):
        block = re.search(r'block="(\d+)"', labels)
        run_id = re.search(r'run_id="([^"]*)"', labels)
        if f'run="{run}"' in labels and block:
            key = (name, block.group(1), run_id.group(1) if run_id else "")
            series[key] = max(series.get(key, float("-inf")), float(value))
    return series


@pytest.fixture(scope="module")
def scraped_run(ray_session, tmp_path_factory) -> tuple[dict[tuple[str, str, str], float],
                                                        dict]:
    """The recipe trained on Ray again (run.name=scraped), the node's metrics port scraped
    while its blocks train: (the series seen, the report). However fast the machine, the
    blocks are still there to be scraped: the driver waits at each progress report until
    the scrape has seen every series (the actors, their chunk done, wait alive for the next
    call)."""
    from dbparallel.runtime.progress import BlockBars

    scraped = threading.Event()
    update = BlockBars.update

    def update_then_wait(self, *args, **kwargs) -> None:
        update(self, *args, **kwargs)
        scraped.wait(timeout=300)  # a guard only: the scrape below ends it (at its deadline)

    run_dir = tmp_path_factory.mktemp("scraped") / "run"
    result: dict = {}
    seen: dict[tuple[str, str, str], float] = {}
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(BlockBars, "update", update_then_wait)
        thread = threading.Thread(target=lambda: result.update(
            report=_train(run_dir, "run.name=scraped")))
        thread.start()
        deadline = time.monotonic() + 240  # a guard only, if the series never come
        try:
            while thread.is_alive() and time.monotonic() < deadline:
                seen.update(_scrape(ray_session["metrics_port"], "scraped"))
                if {(m, b) for m, b, _ in seen} >= {(m, b) for m in SCRAPED for b in "01"}:
                    break
                time.sleep(0.5)
        finally:
            scraped.set()
        thread.join(timeout=300)
    return seen, result["report"]


def test_metrics_scrape_during_a_run(scraped_run) -> None:
    """Scrape the node's metrics port while blocks train; compare with report.json after."""
    seen, report = scraped_run
    # every series of the run carries its run directory's id, the one report.json gives
    run_id = report["run_id"]
    assert {key[2] for key in seen} == {run_id}, sorted(seen)
    assert all((m, b, run_id) in seen for m in SCRAPED for b in "01"), sorted(seen)
    for row in report["per_block"]:
        b = str(row["block"])
        assert 0 < seen[("ray_dbparallel_block_steps_total", b, run_id)] <= row["steps"]
        assert 0 < seen[("ray_dbparallel_block_loss", b, run_id)] < 100
        assert seen[("ray_dbparallel_block_memory_bytes", b, run_id)] == row["peak_memory_bytes"]
        lo, hi = report["partition"][row["block"]]
        assert seen[("ray_dbparallel_block_sigma_low", b, run_id)] == pytest.approx(lo)
        assert seen[("ray_dbparallel_block_sigma_high", b, run_id)] == pytest.approx(hi)


def test_killed_block_restarts_alone_and_resumes_exactly(ray_run, tmp_path, caplog) -> None:
    _, clean = ray_run
    killed = _train(tmp_path / "killed", "debug.kill_block=1", "debug.kill_at_step=8")
    said = [r.getMessage() for r in caplog.records if "was restarted" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith(
        "block 1: its process was restarted (1 of train.max_restarts=") and \
        "went on from its checkpoint of step 6; now at step" in said[0], said
    restarts = [row["restarts"] for row in killed["per_block"]]
    assert restarts == [0, 1]
    # block 1's new actor went on from its checkpoint of step 6, not from the start
    assert [row["resumed_from"] for row in killed["per_block"]] == [0, 6]
    assert [r["final_loss"] for r in killed["per_block"]] == \
        [r["final_loss"] for r in clean["per_block"]]


@pytest.mark.parametrize(("asked", "said"), [
    ("runtime.gpus_per_block=1", "runtime.gpus_per_block: the run asks for 1 GPU in all"),
    ("runtime.cpus_per_block=4", "runtime.cpus_per_block: the run asks for 4 CPUs in all")])
def test_more_than_this_machine_has_is_refused_at_once(ray_session, tmp_path, capsys,
                                                       asked: str, said: str) -> None:
    """More than a Ray instance of this machine has (no autoscaler adds to it): an error
    naming the key, not runtime.placement_timeout_s of waiting, before the run directory is
    written (a corrected rerun may change anything) or blocks are said to queue."""
    from dbparallel.cli import main

    assert main(["train", str(RECIPE), f"run.dir={tmp_path / 'run'}", "data.validate=false",
                 asked, "runtime.placement_timeout_s=30"]) == 2
    out, err = capsys.readouterr()
    assert f"{said}, and this machine's Ray instance has" in err, err
    assert "train at once" not in out
    assert not (tmp_path / "run").exists()
