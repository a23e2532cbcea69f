"""Sizes no machine can train (a width, image side or length with extra zeros) are refused as
the config loads, naming the key, with exit code 2, before torch overflows or fails to
allocate; large models a machine can train still load and plan."""

from __future__ import annotations

import json

import pytest

from dbparallel.cli import main
from dbparallel.config import ConfigError, load_config
from dbparallel.config.sizes import MOST_BYTES, amount, divisors

TEXT = ["task=ar", "data.source=shakespeare"]
BIG = 10**9


@pytest.mark.parametrize(
    ("overrides", "named", "says"),
    [
        (["model.hidden=1000000000"], "model.hidden=1000000000",
         "one block's parameters alone would take 128.4 EiB"),
        (["model.hidden=9223372036854775808"], "model.hidden=9223372036854775808",
         "one block's parameters"),
        (["data.image_size=1000000000"], "data.image_size=1000000000",
         "a step's noise draws alone would take"),
        (["data.image_size=2147483648"], "data.image_size=2147483648", "alone would take"),
        (["data.image_size=1000000"], "data.image_size=1000000",
         "one layer's activations alone would take"),
        (["data.channels=1000000000"], "data.channels", "at most 65,536"),
        (["data.num_classes=9223372036854775808"], "data.num_classes", "at most 16,777,216"),
        (["task=vit", "data.num_classes=1000000000"], "data.num_classes", "labels"),
        (["model.mlp_ratio=1e18"], "model.mlp_ratio=1e+18", "one block's parameters"),
        (["train.batch_size=9223372036854775808"], "train.batch_size=9223372036854775808",
         "a step's noise draws"),
        (["model.depth=1000000000"], "model.depth", "more than 100,000 layers per block"),
        (["model.depth=1000000001"], "model.depth", "more than 100,000 layers per block"),
        (["model.depth=1000000000", "model.blocks=1000000000"], "model.blocks",
         "more than the 100,000"),
        ([*TEXT, "model.hidden=1000000000"], "model.hidden=1000000000",
         "one block's parameters"),
        ([*TEXT, "data.seq_len=1000000000"], "data.seq_len=1000000000",
         "the attention mask alone would take"),
        ([*TEXT, "data.vocab_size=1000000000"], "data.vocab_size", "at most 16,777,216"),
        (["task=mdm", "data.source=shakespeare", "data.seq_len=1000000000000"],
         "data.seq_len=1000000000000", "alone would take"),
    ],
)
def test_an_absurd_size_is_refused_by_plan_naming_the_key(
        capsys, overrides: list[str], named: str, says: str) -> None:
    assert main(["plan", *overrides]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dbparallel: error: {named}"), err
    assert err[len("dbparallel: error: ") + len(named)] in ":= ", err
    assert says in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_an_absurd_width_is_refused_by_a_local_training_run_before_it_starts(
        tmp_path, capsys) -> None:
    run = tmp_path / "run"
    assert main(["train", "--local", f"run.dir={run}", "model.hidden=1000000000"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dbparallel: error: model.hidden=1000000000: "), err
    assert not run.exists()


def test_the_refusal_names_the_key_furthest_above_its_default() -> None:
    # both grow the step's draws; the image side is the one far from usual
    with pytest.raises(ConfigError, match=r"^data\.image_size=4000000: a step's noise draws"):
        load_config([], ["data.image_size=4000000", "train.batch_size=128"])
    with pytest.raises(ConfigError, match=r"^train\.batch_size=100000000000: "):
        load_config([], ["train.batch_size=100000000000", "data.image_size=16"])


@pytest.mark.parametrize("overrides", [
    ["model.hidden=65536"], ["model.depth=2000"], ["model.depth=2000", "model.blocks=1"],
    ["data.image_size=16384", "model.patch_size=16"], ["data.channels=224"],
    [*TEXT, "data.seq_len=1000000", "data.vocab_size=262144"],
    ["model.hidden=65536", "model.depth=2000", "model.blocks=4"],
    ["task=vit", "data.num_classes=21841"],
])
def test_large_models_a_machine_can_train_still_load(overrides: list[str]) -> None:
    cfg = load_config([], overrides)
    assert cfg.model.depth % cfg.model.blocks == 0


@pytest.mark.parametrize("overrides", [["model.hidden=65536"], ["data.image_size=16384"]])
def test_large_models_still_plan(capsys, overrides: list[str]) -> None:
    assert main(["plan", *overrides, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert max(plan["estimated_memory_bytes"]) > 2**30  # counted, not refused


@pytest.mark.slow
def test_a_deep_network_still_plans(capsys) -> None:
    assert main(["plan", "model.depth=2000", "model.blocks=4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["layers_per_block"] == 500


def test_a_depth_that_does_not_split_lists_its_divisors_without_counting_to_it() -> None:
    with pytest.raises(ConfigError, match=r"model\.blocks of 1, 2, 4, 8, 16, .*, 1073741824$"):
        load_config([], ["model.depth=1073741824", "model.blocks=100000"])
    assert divisors(36) == [1, 2, 3, 4, 6, 9, 12, 18, 36]
    assert divisors(1) == [1]


def test_amounts_are_written_in_the_largest_unit() -> None:
    assert amount(MOST_BYTES) == "1.0 PiB"
    assert amount(3 * 2**40 // 2) == "1.5 TiB"
    assert amount(512) == "512 B"


@pytest.mark.parametrize(("overrides", "named", "row"), [
    (["task=vit", "data.num_classes=16000000", "model.hidden=2048", "model.heads=16"],
     "data.num_classes=16,000,000 x model.hidden=2,048", "class"),
    ([*TEXT, "data.vocab_size=16000000", "model.hidden=2048", "model.heads=16"],
     "data.vocab_size=16,000,000 x model.hidden=2,048", "token"),
])
def test_a_frozen_table_larger_than_the_machine_is_refused_before_it_is_drawn(
        capsys, overrides: list[str], named: str, row: str) -> None:
    """Within the bounds of any machine, but not of this one (24 GiB here, 122 GiB asked):
    refused naming the keys that size it, not torch's allocation error (exit 1)."""
    from dbparallel.host import machine_memory

    assert 16_000_000 * 2048 * 4 > machine_memory()  # the premise: this machine lacks it
    assert main(["plan", *overrides]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dbparallel: error: {named}: the frozen table of one unit-norm "
                          f"row per {row} is 122.07 GiB of float32"), err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("overrides", [["task=vit"], TEXT, [*TEXT[1:], "task=looped"]])
def test_plan_and_the_partition_never_draw_the_frozen_table(monkeypatch, capsys,
                                                            overrides: list[str]) -> None:
    """Drawing a large vocabulary's table is most of a plan's time and memory (131,072 x
    2,048: 47 s and 2.4 GiB): ``plan`` counts its step on shapes alone, and a task built for
    its partition draws it only at its first use, once."""
    from dbparallel.models import layers
    from dbparallel.tasks import build_task

    drawn = []
    real = layers.frozen_unit_embedding

    def counted(*args):
        drawn.append(args)
        return real(*args)

    monkeypatch.setattr("dbparallel.tasks.frozen_table.frozen_unit_embedding", counted)
    assert main(["plan", *overrides, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["estimated_memory_bytes"]
    task = build_task(load_config([], overrides))
    assert task.partition.blocks and drawn == []
    assert task.E is task.E and len(drawn) == 1  # drawn at its first use, once
    assert task.E.device.type == "cpu" and task.E.dim() == 2  # drawn, not shapes alone
