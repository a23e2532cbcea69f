"""How a plan fills a cluster (blocks at once, waves, memory per device) and model.blocks=auto."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dbparallel import cli
from dbparallel.config import ConfigError, load_config, parse_bytes
from dbparallel.training.cluster_fit import USABLE, Cluster, cluster_lines, cluster_plan
from dbparallel.training.plan import block_memory, fit_blocks

SMALL = ["model.depth=8", "train.batch_size=16"]


def _cfg(*overrides: str):
    return load_config([], [*SMALL, *overrides])


def test_memory_amounts_parse_with_units_and_name_the_key() -> None:
    assert parse_bytes("80GiB", "k") == 80 * 2**30
    assert parse_bytes("24 GB", "k") == 24 * 10**9
    assert parse_bytes("1.5e9", "k") == 1_500_000_000
    assert parse_bytes("", "k") == 0
    with pytest.raises(ConfigError, match="runtime.device_memory: 'lots' is not an amount"):
        _cfg("runtime.device_memory=lots")


def test_auto_blocks_is_the_smallest_b_whose_blocks_fit() -> None:
    need = {b: max(block_memory(_cfg(f"model.blocks={b}"))) for b in (1, 2, 4, 8)}
    assert need[1] > need[2] > need[4] > need[8]  # fewer layers per block, less memory
    # the plan fills USABLE of a device, the rest left for what it does not count
    between = int((need[2] + need[4]) / 2 / USABLE)  # B=2 does not fit, B=4 does
    cfg = load_config([], [*SMALL, "model.blocks=auto", f"runtime.device_memory={between}"],
                      fit_blocks)
    assert cfg.model.blocks == 4
    roomy = load_config([], [*SMALL, "model.blocks=auto",
                             f"runtime.device_memory={int(need[1] / USABLE) + 1}"], fit_blocks)
    assert roomy.model.blocks == 1
    tight = load_config([], [*SMALL, "model.blocks=auto", f"runtime.device_memory={need[1]}"],
                        fit_blocks)  # the count alone fits: not enough room beside it
    assert tight.model.blocks == 2


def test_auto_blocks_from_a_yaml_file_and_its_errors(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model:\n  blocks: auto\n  depth: 8\nruntime:\n  device_memory: 1GiB\n")
    assert load_config([recipe], ["train.batch_size=16"], fit_blocks).model.blocks == 1
    with pytest.raises(ConfigError, match="model.blocks=auto: B is chosen from"):
        load_config([recipe], [])  # no fitting function: only train and plan resolve it
    with pytest.raises(ConfigError, match="set runtime.device_memory"):
        load_config([], ["model.blocks=auto"], fit_blocks)
    with pytest.raises(ConfigError, match=r"no B that divides model.depth=8 trains within "
                                          r"90% of runtime.device_memory=1KiB; even B=8 needs "
                                          r"[0-9.]+ MiB per block; set train.checkpoint_layers="
                                          r"true, raise train.micro_batches"):
        load_config([], ["model.blocks=auto", "runtime.device_memory=1KiB"], fit_blocks)


def test_waves_and_memory_per_device_on_a_gpu_cluster() -> None:
    cfg = _cfg("model.blocks=4", "runtime.gpus_per_block=1")
    memory = block_memory(cfg)
    two = cluster_plan(cfg, Cluster(float("inf"), 2, "runtime.devices"), memory)
    assert (two["concurrent_blocks"], two["waves"], two["cpus"]) == (2, 2, None)
    assert two["memory_per_device_bytes"] == max(memory) and two["fits"] is None
    eight = cluster_plan(cfg, Cluster(64, 8, "detected"), memory)
    assert (eight["concurrent_blocks"], eight["waves"]) == (4, 1)
    shared = _cfg("model.blocks=4", "runtime.gpus_per_block=0.5", "runtime.device_memory=1GiB")
    half = cluster_plan(shared, Cluster(64, 1, "detected"), memory)
    # two blocks on each GPU: their memory adds up
    assert (half["concurrent_blocks"], half["blocks_per_device"]) == (2, 2)
    assert half["memory_per_device_bytes"] == 2 * max(memory) and half["fits"] is True
    with_assembler = _cfg("model.blocks=4", "runtime.gpus_per_block=1",
                          "runtime.assembly_gpus=1")
    assert cluster_plan(with_assembler, Cluster(64, 3, "detected"),
                        memory)["concurrent_blocks"] == 2
    by_hand = _cfg("model.blocks=4", "runtime.max_concurrent_blocks=3")
    assert cluster_plan(by_hand, Cluster(64, 0, "detected"), memory)["waves"] == 2
    assert two["room"] == 2 and eight["room"] == 4
    none = cluster_plan(cfg, Cluster(2, 0, "this machine"), memory)  # a GPU asked, none here
    assert none["room"] == 0
    assert "does NOT fit: one block (1 GPU + 0.5 CPU) is more than the cluster has" in \
        "\n".join(cluster_lines(cfg, none))
    assert "waits" not in "\n".join(cluster_lines(cfg, none))  # nothing joins this machine
    starting = cluster_plan(cfg, Cluster(2, 0, "detected"), memory)  # GPU nodes not there yet
    assert (starting["concurrent_blocks"], starting["waves"]) == (4, 1)  # asks for every block
    assert "a run on it asks for every block and waits up to runtime.placement_timeout_s for " \
        "nodes to join" in "\n".join(cluster_lines(cfg, starting))
    by_hand = _cfg("model.blocks=4", "runtime.gpus_per_block=1", "runtime.max_concurrent_blocks=2")
    lines = "\n".join(cluster_lines(by_hand, cluster_plan(by_hand, Cluster(2, 0, "detected"),
                                                            memory)))
    assert "2 of 4 blocks at once: 2 waves" in lines and "every block" not in lines


def test_a_joined_cluster_is_named_by_its_address(monkeypatch) -> None:
    from dbparallel.runtime.ray_connect import joined_name

    cfg = _cfg("model.blocks=4", "runtime.gpus_per_block=1")
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert joined_name(cfg) == "RAY_ADDRESS=10.0.0.1:6379"
    named = _cfg("model.blocks=4", "runtime.gpus_per_block=1", "runtime.address=head:6379")
    assert joined_name(named) == "runtime.address=head:6379"  # it comes before RAY_ADDRESS
    monkeypatch.delenv("RAY_ADDRESS")
    assert joined_name(cfg) == "the local instance"
    plan = cluster_plan(cfg, Cluster(64, 8, "detected", joined="RAY_ADDRESS=10.0.0.1:6379"),
                        block_memory(cfg))
    assert (plan["source"], plan["joined"]) == ("detected", "RAY_ADDRESS=10.0.0.1:6379")
    assert cluster_lines(cfg, plan)[0] == \
        "cluster (RAY_ADDRESS=10.0.0.1:6379): 8 GPUs, 64 CPUs; each block 1 GPU + 0.5 CPU"


def test_plan_command_shows_the_cluster(capsys) -> None:
    assert cli.main(["plan", *SMALL, "model.blocks=auto", "runtime.device_memory=8GiB",
                     "runtime.devices=2", "runtime.gpus_per_block=1"]) == 0
    out = capsys.readouterr().out
    assert "8 blocks" not in out and "task dit: 1 block x 8 layers" in out
    assert "cluster (runtime.devices): 2 GPUs; each block 1 GPU + 0.5 CPU" in out
    assert cli.main(["plan", *SMALL, "model.blocks=4", "runtime.devices=2",
                     "runtime.gpus_per_block=1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)  # strict JSON: no Infinity
    assert result["cluster"]["waves"] == 2 and result["blocks"] == 4
    assert cli.main(["plan", "model.blocks=auto"]) == 2
    assert "set runtime.device_memory" in capsys.readouterr().err


def test_a_step_rate_estimate_needs_the_gpu_model() -> None:
    from dbparallel.training.cluster_fit import ASSUMED_MFU
    from dbparallel.training.plan import plan

    cfg = _cfg("model.blocks=2", "runtime.gpus_per_block=1", "train.precision=bf16")
    result = plan(cfg, Cluster(float("inf"), 2, "runtime.devices", "NVIDIA H100 80GB HBM3"))
    flops = result["model_flops_per_step"]
    assert len(flops) == 2 and all(f > 0 for f in flops)
    c = result["cluster"]
    assert c["peak_tflops"] == 989.4 and c["assumed_mfu"] == ASSUMED_MFU
    assert c["estimated_steps_per_s"] == pytest.approx(
        [989.4e12 * ASSUMED_MFU / f for f in flops])
    doubled = plan(load_config([], [*SMALL, "model.blocks=2", "runtime.gpus_per_block=1",
                                    "train.precision=bf16", "train.batch_size=32"]),
                   Cluster(float("inf"), 2, "runtime.devices", "H100"))
    assert doubled["model_flops_per_step"][0] == 2 * flops[0]  # twice the batch, twice the work
    assert plan(cfg, Cluster(float("inf"), 2, "runtime.devices"))["cluster"][
        "estimated_steps_per_s"] is None  # no model named: no peak, no estimate


def test_replicas_take_a_worker_each_and_a_share_of_the_batch(capsys) -> None:
    one = _cfg("model.blocks=4", "runtime.gpus_per_block=1")
    two = _cfg("model.blocks=4", "runtime.gpus_per_block=1", "runtime.replicas_per_block=2")
    # a replica holds the activations of its half of the batch, the same weights and Adam
    assert max(block_memory(two)) < max(block_memory(one))
    eight = cluster_plan(two, Cluster(64, 8, "detected"), block_memory(two))
    assert (eight["concurrent_blocks"], eight["waves"], eight["replicas_per_block"]) == (4, 1, 2)
    four = cluster_plan(two, Cluster(64, 4, "detected"), block_memory(two))
    assert (four["concurrent_blocks"], four["waves"]) == (2, 2)
    assert cli.main(["plan", *SMALL, "model.blocks=4", "runtime.devices=12",
                     "runtime.gpus_per_block=1"]) == 0
    assert "8 GPUs stay idle: runtime.replicas_per_block=3" in capsys.readouterr().out


@pytest.mark.parametrize("overrides, said", [
    (["model.blocks=1", "runtime.devices=1"],
     ["task dit: 1 block x 8 layers", "1 GPU; each block", "1 of 1 block at once: 1 wave; "
      "1 replica per block", "(1 block per GPU)"]),
    (["model.blocks=4", "runtime.devices=4", "runtime.replicas_per_block=2"],
     ["task dit: 4 blocks x 2 layers", "4 GPUs; each block", "2 of 4 blocks at once: 2 waves; "
      "2 replicas per block"]),
])
def test_plan_counts_read_in_the_singular_for_one(capsys, overrides, said) -> None:
    assert cli.main(["plan", *SMALL, "runtime.gpus_per_block=1", *overrides]) == 0
    out = capsys.readouterr().out
    assert [s for s in said if s not in out] == []
    assert "(s)" not in out
