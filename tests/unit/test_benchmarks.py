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
                         "ratio": float})
    rows = result["rows"]
    assert [r["blocks"] for r in rows] == [1, 2, 4]  # 3 does not divide 4 layers
    for r in rows:
        assert r["ratio"] == r["e2e_bytes"] / r["block_bytes"]
        assert 0 < r["stem_bytes"] < r["block_bytes"]
        assert r["e2e_checkpointed_bytes"] < r["e2e_bytes"]
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
    if model == "ar":
        # the AR block drops its clean stream's output during the forward pass; the trainer's
        # meter never forgets a storage, so it still counts that branch (and skips a later
        # tensor at a reused address): the two agree only roughly there
        assert live["activations"] == pytest.approx(m.activations, rel=0.2)
    else:
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
