"""What `dbparallel plan` says of a cluster its config would not use as the user expects."""

from __future__ import annotations

import json

import pytest

from dbparallel import cli

SMALL = ["model.depth=8", "train.batch_size=16", "model.blocks=4"]
TEXT = ["data.source=shakespeare", "model.hidden=32", "model.heads=2"]


def _plan(capsys, *overrides: str, code: int = 0) -> str:
    assert cli.main(["plan", *SMALL, *overrides]) == code
    return capsys.readouterr().out


def test_gpus_with_blocks_on_cpus_name_runtime_gpus_per_block(capsys) -> None:
    out = _plan(capsys, "runtime.devices=8", "runtime.device_memory=24GiB")
    assert ("runtime.gpus_per_block=0: the blocks train on CPUs and none of the 8 GPUs is "
            "used; set runtime.gpus_per_block=1") in out
    assert "runtime.gpus_per_block=0" not in _plan(capsys, "runtime.devices=8",
                                                   "runtime.gpus_per_block=1")
    assert "runtime.gpus_per_block=0" not in _plan(capsys)  # no GPU here: nothing to say


def test_a_block_that_does_not_fit_names_the_keys_that_can_still_shrink_it(capsys) -> None:
    tight = ["runtime.devices=4", "runtime.gpus_per_block=1", "runtime.device_memory=1KiB"]
    out = _plan(capsys, *tight, code=1)
    assert ("does NOT fit: set train.checkpoint_layers=true, raise model.blocks (model.blocks="
            "auto picks the smallest that fits), runtime.replicas_per_block or "
            "train.micro_batches, lower train.batch_size") in out
    # one layer a block, checkpointed, one row a piece: only the batch and the model are left
    out = _plan(capsys, *tight, "model.blocks=8", "train.checkpoint_layers=true",
                "train.micro_batches=16", code=1)
    assert "does NOT fit: lower train.batch_size or use a smaller model;" in out


def test_a_gpu_model_without_a_known_peak_is_named_with_the_known_ones(capsys) -> None:
    gpus = ["runtime.devices=2", "runtime.gpus_per_block=1"]
    out = _plan(capsys, *gpus, "runtime.device_name=RTX 4090")
    assert ("no step-rate estimate: runtime.device_name='RTX 4090' has no known dense peak "
            "(known: GH200, H200 NVL, H200 SXM, H100 NVL, H100 PCIe, H100 SXM, A100, L40S, L4, "
            "A10); name one of those with runtime.device_name") in out
    # any case; the row used is named, H100 SXM and PCIe differ
    assert "40% MFU of A100's 19.5 TFLOP/s (fp32)" in _plan(capsys, *gpus,
                                                            "runtime.device_name=a100")
    assert "MFU of H100 PCIe's 51.2 TFLOP/s" in _plan(capsys, *gpus,
                                                     "runtime.device_name=h100 pcie")


def test_max_concurrent_blocks_beyond_or_below_the_cluster_is_named(capsys) -> None:
    gpus = ["runtime.gpus_per_block=1"]
    out = _plan(capsys, *gpus, "runtime.devices=2", "runtime.max_concurrent_blocks=3")
    assert ("runtime.max_concurrent_blocks=3 asks for 3 blocks at once, but the cluster has "
            "room for 2: a run waits runtime.placement_timeout_s for nodes to join, then fails; "
            "set it to 2 or less") in out
    out = _plan(capsys, *gpus, "runtime.devices=8", "runtime.max_concurrent_blocks=2")
    # 2 GPUs train, 6 idle, and more replicas would not fill them while 2 blocks train at once
    assert ("6 GPUs stay idle: runtime.max_concurrent_blocks=2 trains fewer blocks at once "
            "than the cluster has room for (4)") in out and "replicas_per_block=" not in out
    assert "4 GPUs stay idle: runtime.replicas_per_block=2" in _plan(capsys, *gpus,
                                                                    "runtime.devices=8")


def test_a_bf16_plan_says_its_activations_are_counted_under_autocast(capsys) -> None:
    out = _plan(capsys, "train.precision=bf16")
    assert "activations counted under CUDA's bf16 autocast (train.precision=bf16" in out
    assert "autocast" not in _plan(capsys, "train.precision=tf32")


def test_more_than_one_gpu_per_block_is_said_to_leave_gpus_idle(capsys) -> None:
    out = _plan(capsys, "runtime.devices=8", "runtime.gpus_per_block=2")
    assert ("runtime.gpus_per_block=2: a block (each replica) trains on one GPU, the other 1 "
            "it reserves stay idle (no model parallelism)") in out
    assert "reserves stay idle" not in _plan(capsys, "runtime.devices=8",
                                             "runtime.gpus_per_block=1")


def test_plan_help_names_the_cluster_keys(capsys) -> None:
    import pytest

    with pytest.raises(SystemExit):
        cli.main(["plan", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for key in ("runtime.devices=N", "runtime.device_memory=80GiB", "runtime.device_name=H100",
                "runtime.gpus_per_block=1", "model.blocks=auto"):
        assert key in out


def test_a_run_whose_block_exceeds_runtime_device_memory_is_warned_before_it_starts() -> None:
    from dbparallel.config import load_config
    from dbparallel.training.plan import block_memory, memory_warning

    gpu = [*SMALL, "runtime.gpus_per_block=1"]
    tight = load_config([], [*gpu, "runtime.device_memory=1MiB"])
    need = block_memory(tight)
    worst = need.index(max(need))
    said = memory_warning(tight)
    assert said is not None and said.startswith(f"block {worst} needs about ")
    assert "more than 90% of runtime.device_memory=1MiB: it may run out of device memory; " \
        "`dbparallel plan` with this config names the keys" in said
    assert memory_warning(load_config([], [*gpu, "runtime.device_memory=80GiB"])) is None
    assert memory_warning(load_config([], gpu)) is None  # no device memory given
    assert memory_warning(load_config([], [*SMALL, "runtime.device_memory=1MiB"])) is None


def test_the_plan_estimates_the_training_time_in_waves(capsys) -> None:
    import json

    gpu = ["runtime.devices=2", "runtime.gpus_per_block=1", "runtime.device_name=H100",
           "train.steps=100000"]
    assert cli.main(["plan", *SMALL, *gpu, "--json"]) == 0
    found = json.loads(capsys.readouterr().out)["cluster"]
    rates, waves = found["estimated_steps_per_s"], found["waves"]
    assert waves == 2 and len(rates) == 4  # 4 blocks, 2 at once
    expected = sum(max(100000 / r for r in rates[w:w + 2]) for w in (0, 2))
    assert found["estimated_train_s"] == expected
    out = _plan(capsys, *gpu)
    assert "  blocks 2..3 queue and each starts when a block finishes" in out
    assert "  block 2 queues and starts when a block finishes" in _plan(
        capsys, *gpu, "model.blocks=3", "model.depth=6")
    assert "  estimated training time: " in out and " for train.steps in 2 waves at those " \
        "rates (steps only: data waits, checkpoints and assemblies add to it)" in out
    short = _plan(capsys, *gpu[:-1], "train.steps=10")  # seconds, not "0 min"
    seconds = sum(max(10 / r for r in rates[w:w + 2]) for w in (0, 2))
    assert f"  estimated training time: {round(seconds)} s for train.steps" in short


def test_the_plan_shows_what_the_largest_block_holds(capsys) -> None:
    import json

    from dbparallel.config import bytes_text

    assert cli.main(["plan", *SMALL, "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    parts = found["memory_parts"]
    assert len(parts) == 4 and all(p["params_and_optimizer"] == 4 * p["ema"] > 0 for p in parts)
    worst = max(range(4), key=found["estimated_memory_bytes"].__getitem__)
    shown = _plan(capsys)
    assert (f"block {worst}'s step: parameters, gradients and Adam "
            f"{bytes_text(parts[worst]['params_and_optimizer'])} and the EMA "
            f"{bytes_text(parts[worst]['ema'])} (only more blocks shrink them), activations "
            f"{bytes_text(parts[worst]['activations'])}") in shown


def test_a_plan_that_cannot_train_exits_1_and_says_why(capsys) -> None:
    gpu = ["runtime.devices=4", "runtime.gpus_per_block=1"]
    _plan(capsys, *gpu, "runtime.device_memory=24GiB")  # fits: 0
    assert cli.main(["plan", *SMALL, *gpu, "runtime.device_memory=1MiB", "--json"]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["cluster"]["fits"] is False  # the plan is printed all the same
    assert "plan: a device holds 6.3 MiB of training, more than 90% of runtime.device_memory=" \
           "1.0 MiB; exit code 1" in err
    # a block asking more GPUs than a fixed cluster has: no wave can start
    assert cli.main(["plan", *SMALL, "runtime.devices=1", "runtime.gpus_per_block=2"]) == 1
    assert "plan: one block is more than the cluster (runtime.devices) has" in \
           capsys.readouterr().err


@pytest.mark.parametrize("overrides, ran, never", [
    (["task=dit", "sample.steps=2"], "blocks 0, 3", "blocks 1, 2 train but never run"),
    # 3 points at q = 1, 1/2, 0 of the training density: 1/2 is block 1's lower boundary
    (["task=ar", *TEXT, "sample.steps=3"], "blocks 0, 1, 3", "block 2 trains but never runs"),
    (["task=mdm", *TEXT, "sample.steps=2"], "blocks 0, 2", "blocks 1, 3 train but never run"),
    (["task=vit", "model.blocks=8", "noise.partition=log_uniform"],
     "blocks 0, 3, 3, 4, 4, 4, 5, 7", "blocks 1, 2, 6 train but never run"),
])
def test_a_block_the_sampler_never_runs_is_warned_of(capsys, caplog, overrides, ran,
                                                     never) -> None:
    """Fewer sample.steps than blocks (or ViT's chain on a log-uniform partition of more
    than 4 blocks): a block that trains for nothing is said by plan and before a run."""
    from dbparallel.config import load_config
    from dbparallel.tasks import unused_blocks_warning

    said = unused_blocks_warning(load_config([], [*SMALL, *overrides]))
    assert said is not None and f"runs {ran}: {never} when sampling" in said, said
    assert cli.main(["plan", *SMALL, *overrides]) == 0
    assert f"plan: warning: {said}" in capsys.readouterr().err
    enough = [o for o in overrides if not o.startswith(("sample.steps", "noise.partition"))]
    assert unused_blocks_warning(load_config([], [*SMALL, *enough])) is None
