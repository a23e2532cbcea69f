"""The CPU benchmarks on tiny settings: JSON shapes and the invariants their numbers obey.

No timing is asserted here: timing claims live in benchmarks/results and the README.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import memory, sampling  # noqa: E402
from dbparallel.config import load_config  # noqa: E402

TINY = {
    "dit": memory.Setup("dit", "tiny DiT", {"preset": "tiny", "patch_size": 2},
                        {"image_size": 8, "channels": 1}, 4),
    "vit": memory.Setup("vit", "tiny ViT", {"preset": "tiny", "patch_size": 2},
                        {"image_size": 8, "channels": 1}, 4),
    "ar": memory.Setup("ar", "tiny AR", {"preset": "tiny"}, {"seq_len": 8, "vocab_size": 16}, 4),
}


def _check_rows(result: dict, fields: dict[str, type]) -> None:
    json.dumps(result, allow_nan=False)  # strict JSON: no NaN or infinity slipped in
    assert result["rows"]
    for row in result["rows"]:
        for key, kind in fields.items():
            assert isinstance(row[key], kind), (key, row[key])


@pytest.mark.parametrize("model", sorted(TINY))
def test_memory_rows(model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(memory.SETUPS, model, TINY[model])
    result = {"rows": memory.measure(model, depths=(4,), blocks=(1, 2, 3, 4))}
    _check_rows(result, {"model": str, "depth": int, "blocks": int, "e2e_bytes": int,
                         "e2e_checkpointed_bytes": int, "block_bytes": int, "stem_bytes": int,
                         "block_checkpointed_bytes": int, "ratio": float})
    rows = result["rows"]
    assert [r["blocks"] for r in rows] == [1, 2, 4]  # 3 does not divide 4 layers
    for r in rows:
        assert r["ratio"] == r["e2e_bytes"] / r["block_bytes"]
        assert 0 < r["stem_bytes"] < r["block_bytes"]
        assert r["e2e_checkpointed_bytes"] < r["e2e_bytes"]
        if r["depth"] // r["blocks"] >= 2:  # a block of one layer has nothing to save
            assert r["block_checkpointed_bytes"] < r["block_bytes"]
    sizes = [r["block_bytes"] for r in rows]
    assert sizes == sorted(sizes, reverse=True)  # fewer layers per block, fewer bytes


def test_memory_dit_block_of_one_is_the_end_to_end_network(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(memory.SETUPS, "dit", TINY["dit"])
    row = memory.measure("dit", depths=(2,), blocks=(1,))[0]
    assert row["e2e_bytes"] == row["block_bytes"] and row["ratio"] == 1.0


@pytest.mark.parametrize("model", sorted(TINY))
@pytest.mark.parametrize("end_to_end", [False, True])
def test_memory_on_meta_equals_a_cpu_step(model: str, end_to_end: bool) -> None:
    """The meta-device bytes are those of a real CPU training step."""
    cfg = memory.config(TINY[model], 4, 2, end_to_end=end_to_end)
    assert memory.step_bytes(cfg) == memory.step_bytes(cfg, device="cpu")
    if end_to_end:  # checkpointing is measured, not computed: meta and CPU agree on it too
        assert (memory.step_bytes(cfg, checkpointed=True)
                == memory.step_bytes(cfg, checkpointed=True, device="cpu"))


@pytest.mark.parametrize("model", sorted(TINY))
def test_memory_agrees_with_the_trainers_byte_meter(model: str) -> None:
    from dbparallel.training.block_trainer import BlockTrainer

    cfg = memory.config(TINY[model], 4, 2)
    trainer = BlockTrainer(cfg, 0)
    trainer.train_step(trainer.task.example_batch(cfg.train.batch_size, "cpu"))
    assert trainer.memory is not None
    m = trainer.memory
    live = memory.step_bytes(cfg, device="cpu")
    assert live["params_and_optimizer"] == m.params + m.grads + m.optimizer
    # (the AR block too: its clean stream's last layer computes only the keys and values the
    # noisy tokens read, so no branch is dropped that the trainer's meter would still count)
    assert live["activations"] == m.activations


def test_sampling_rows() -> None:
    result = sampling.run(blocks=(2, 4), steps=3, images=2, repeats=1, depth=4, preset="tiny")
    _check_rows(result, {"blocks": int, "steps": int, "e2e_layer_evals": int,
                         "db_layer_evals": int, "e2e_s_per_image": float,
                         "db_s_per_image": float})
    for r in result["rows"]:
        assert r["steps"] == 3
        # with guidance every step evaluates the layers on two copies of each image
        assert r["e2e_layer_evals"] == 2 * 3 * 4
        assert r["db_layer_evals"] * r["blocks"] == r["e2e_layer_evals"]
        assert r["e2e_s_per_image"] > 0 and r["db_s_per_image"] > 0


def test_decode_rows() -> None:
    from benchmarks import decode

    result = decode.run(quick=True)
    _check_rows(result, {"format": str, "rows": int, "encoded_bytes": int, "threads": int,
                         "effective_threads": int, "rows_per_s": float, "speedup": float})
    for name in {r["format"] for r in result["rows"]}:
        mine = [r for r in result["rows"] if r["format"] == name]
        assert [r["threads"] for r in mine] == list(range(1, result["cores"] + 1))
        assert mine[0]["speedup"] == 1.0 and all(r["rows_per_s"] > 0 for r in mine)


def test_encode_ahead_rows() -> None:
    from benchmarks import encode_ahead

    result = encode_ahead.run(quick=True, rows=64)
    _check_rows(result, {"rewrite": str, "rows": int, "rows_per_s_one_after_the_other": float,
                         "rows_per_s_decoded_ahead": float, "speedup": float,
                         "same_rows_written": bool})
    assert len(result["rows"]) == 3
    for r in result["rows"]:
        assert r["same_rows_written"]  # the two ways write the same rows
        assert r["speedup"] == r["rows_per_s_decoded_ahead"] / \
            r["rows_per_s_one_after_the_other"]


def test_batch_ahead_rows() -> None:
    """Both arms train on the same rows, in the same number of steps."""
    from benchmarks import batch_ahead

    result = batch_ahead.run(quick=True, step_ms=1.0, sizes=[(16, 32, 512, 64)])
    _check_rows(result, {"side": int, "batch": int, "batch_bytes": int, "arm": str,
                         "steps": int, "batch_ms_median": float, "batch_ms_p90": float,
                         "steps_per_s": float, "step_ms": float, "checksum": int})
    due, ahead = result["rows"]
    assert (due["arm"], ahead["arm"]) == ("when due", "ahead")
    assert due["checksum"] == ahead["checksum"] > 0 and due["steps"] == ahead["steps"] == 20
    assert due["batch_bytes"] == 32 * (3 * 16 * 16 + 8)


def test_window_read_rows() -> None:
    """Every thread count reads the same window; the first is the yardstick."""
    from benchmarks import window_read

    result = window_read.run(quick=True, setting=(16, 32, 2))
    _check_rows(result, {"threads": int, "side": int, "shards": int, "rows": int,
                         "window_bytes": int, "seconds": float, "mb_per_s": float,
                         "speedup": float, "process_peak_growth_bytes": int})
    rows = result["rows"]
    assert [r["threads"] for r in rows] == list(range(1, min(result["cores"], 2) + 1))
    assert {r["window_bytes"] for r in rows} == {64 * 3 * 16 * 16} and rows[0]["speedup"] == 1.0


@pytest.mark.slow  # a process per row group read; the reader by default: test_shard_pieces
def test_parquet_read_rows() -> None:
    """Both arms read every row of the same row group; in pieces, Arrow holds less of it."""
    from benchmarks import parquet_read

    result = parquet_read.run(quick=True)
    assert len(result["rows"]) == len(parquet_read.LAYOUTS) * len(parquet_read.ARMS)
    for whole, pieces in zip(result["rows"][::2], result["rows"][1::2], strict=True):
        assert (whole["arm"], pieces["arm"]) == ("whole", "pieces")
        assert whole["rows_read"] == pieces["rows_read"] == whole["rows"] > 0
        if whole["layout"] == "uint8 fixed-size lists":
            assert pieces["arrow_peak_bytes"] < whole["arrow_peak_bytes"] / 2


@pytest.mark.slow  # a process per row group written; the writer by default: test_reshard
def test_parquet_write_rows() -> None:
    """Both arms write the same rows as one row group (pages may split elsewhere: a file
    within 1% of the other's size); in pieces, Arrow holds less of it."""
    from benchmarks import parquet_write

    result = parquet_write.run(quick=True)
    assert len(result["rows"]) == len(parquet_write.LAYOUTS) * len(parquet_write.ARMS)
    for whole, pieces in zip(result["rows"][::2], result["rows"][1::2], strict=True):
        assert (whole["arm"], pieces["arm"]) == ("one chunk", "pieces")
        assert whole["rows"] == pieces["rows"] > 0
        assert abs(whole["file_bytes"] - pieces["file_bytes"]) < whole["file_bytes"] / 100
        if whole["layout"] == "uint8 fixed-size lists":
            assert pieces["arrow_peak_bytes"] < whole["arrow_peak_bytes"] / 2


@pytest.mark.slow
@pytest.mark.ray
def test_throughput_rows(ray_session: dict) -> None:
    from benchmarks import throughput

    result = throughput.run(blocks=(2,), depth=2, batch=8, preset="tiny", steps=2, warmup=1)
    _check_rows(result, {"blocks": int, "single_samples_per_s": float,
                         "aggregate_samples_per_s": float, "efficiency": float,
                         "data_share": float, "e2e_samples_per_s": float,
                         "first_batch_s": float})
    (row,) = result["rows"]
    assert row["first_batch_s"] > 0  # each actor's stream started cold
    assert row["efficiency"] == pytest.approx(
        row["aggregate_samples_per_s"] / (2 * row["single_samples_per_s"]))
    assert 0 <= row["data_share"] < 1
    assert "not_measured" in result["data_parallel_e2e"]  # no GPUs here


def test_data_scale_parquet_writer(tmp_path: Path) -> None:
    """The synthetic images: several files, row groups, schema, labels, determinism, reuse."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from benchmarks import data_scale

    a = data_scale.write_images(tmp_path / "a", 300, 8, row_group=32)
    b = data_scale.write_images(tmp_path / "b", 300, 8, row_group=32)
    files = sorted(a.glob("*.parquet"))
    assert len(files) >= 4 and [f.name for f in files] == sorted(p.name for p in b.iterdir())
    for f in files:
        meta = pq.ParquetFile(f).metadata
        assert all(meta.row_group(i).num_rows <= 32 for i in range(meta.num_row_groups))
    table = pq.read_table(a)
    assert table.num_rows == 300
    assert table.schema.field("image").type == pa.list_(pa.uint8(), 3 * 8 * 8)
    assert table.schema.field("label").type == pa.int64()
    labels = table.column("label").to_numpy()
    assert labels.min() >= 0 and labels.max() < 10 and len(set(labels)) > 1
    assert table.equals(pq.read_table(b))  # same seed, same rows
    images = np.stack(table.column("image").to_numpy(zero_copy_only=False)).reshape(-1, 3, 8, 8)
    means = [images[labels == k].mean() for k in set(labels)]
    assert np.std(means) > 5  # class-conditional: the classes differ
    stamp = files[0].stat().st_mtime_ns
    data_scale.write_images(a, 300, 8, row_group=32)  # complete: reused, not rewritten
    assert files[0].stat().st_mtime_ns == stamp


def test_data_scale_ratios_and_skip() -> None:
    """Targets computed from a hand-built result; today's 16x skipped only when too big."""
    from benchmarks import data_scale

    rows = [{"impl": "streaming", "rows": 100, "peak_memory_bytes": 1000,
             "samples_per_second_per_block": 90.0},
            {"impl": "streaming", "rows": 1600, "peak_memory_bytes": 1150,
             "samples_per_second_per_block": 95.0},
            {"impl": "today", "rows": 100, "peak_memory_bytes": 900,
             "samples_per_second_per_block": 100.0},
            {"impl": "today", "rows": 1600, "skipped": "too big"}]
    r = data_scale.ratios(rows, base_rows=100)
    assert r["streaming_peak_16x_over_1x"]["value"] == pytest.approx(1.15)
    assert r["streaming_peak_16x_over_1x"]["target_met"] is True
    assert r["streaming_over_today_samples_per_s_1x"]["value"] == pytest.approx(0.9)
    assert r["streaming_over_today_samples_per_s_1x"]["target_met"] is True
    rows[1]["peak_memory_bytes"] = 1300
    rows[0]["samples_per_second_per_block"] = 80.0
    r = data_scale.ratios(rows, base_rows=100)
    assert not r["streaming_peak_16x_over_1x"]["target_met"]
    assert not r["streaming_over_today_samples_per_s_1x"]["target_met"]
    assert data_scale.ratios(rows[2:], 100)["streaming_peak_16x_over_1x"] == {
        "value": None, "target": "<= 1.2", "target_met": None}
    json.dumps(r, allow_nan=False)
    today = [{"rows": 100, "peak_memory_bytes": 1 * 2**30},
             {"rows": 400, "peak_memory_bytes": 4 * 2**30}]  # +1 GiB per 100 rows
    assert data_scale.too_big(today, 1600, total=64 * 2**30) is None  # 16 GiB < 60% of 64
    assert "exceeds 60%" in data_scale.too_big(today, 1600, total=16 * 2**30)
    assert data_scale.too_big(today[:1], 1600, total=1) is None  # nothing to extrapolate from


def test_replicas_prints_and_plots_a_quick_result_without_waves(tmp_path: Path) -> None:
    """--quick measures the replica pair only ("waves": None); the full run's result (the
    committed one) keeps both parts in the table and the plot."""
    import matplotlib

    from benchmarks import replicas

    matplotlib.use("Agg")
    full = json.loads((ROOT / "benchmarks" / "results" / "replicas.json").read_text())
    quick = {**full, "quick": True, "steps": replicas.QUICK_STEPS, "waves": None}
    for name, result in (("full", full), ("quick", quick)):
        text = replicas.table(result)
        assert f"efficiency {full['replicas']['efficiency']:.2f}" in text
        assert ("waves / at once" in text) == (name == "full")
        assert ("no waves arms" in text) == (name == "quick")
        replicas.plot(result, tmp_path / f"{name}.png")
    import matplotlib.image

    widths = {n: matplotlib.image.imread(tmp_path / f"{n}.png").shape[1] for n in ("full", "quick")}
    assert widths["quick"] < widths["full"]  # one panel, not two


def test_quality_variants_keep_the_layer_steps() -> None:
    from benchmarks import quality_images, quality_variants

    assert quality_variants.split_steps([6, 3, 1], 3000) == [1800, 900, 300]
    assert quality_variants.split_steps([1, 1, 1], 10) == [4, 3, 3]
    assert sum(quality_variants.split_steps([5, 3, 2, 1], 4003)) == 4003
    assert quality_variants.overrides("learned+log_uniform", 3, 1000) == [
        "model.label_embedding=learned", "noise.partition=log_uniform"]
    assert quality_variants.overrides("steps=6:3:1", 3, 1000) == [
        "train.block_steps=[1800,900,300]"]
    with pytest.raises(ValueError, match="3 weights for B=2"):
        quality_variants.overrides("steps=6:3:1", 2, 1000)
    with pytest.raises(ValueError, match="unknown variant"):
        quality_variants.overrides("shared", 3, 1000)
    runs = quality_images.methods([3], ["default", "steps=6:3:1"], 1000)
    assert [(m, b, v) for m, b, v, _ in runs] == [
        ("end_to_end", 1, ""), ("diffusionblocks", 3, "default"),
        ("diffusionblocks", 3, "steps=6:3:1")]
    for _, _, _, extra in runs:  # every column spends 12,000 layer-steps of a 12-layer net
        cfg = load_config([ROOT / "jobs/vit_tiny.yaml"], ["model.depth=12", "train.steps=1000",
                                                          *extra])
        assert quality_images.layer_steps(cfg) == 12_000


SCRIPTS = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py")
                 if "__main__" in p.read_text())


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_benchmark_script_imports(name: str) -> None:
    """A script whose import broke (a helper moved between modules) fails here, not on the
    machine that runs it next; the docs name each of them as a command."""
    import importlib

    module = importlib.import_module(f"benchmarks.{name}")
    assert callable(module.main)
