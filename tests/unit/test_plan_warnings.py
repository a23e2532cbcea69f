"""What `dbparallel plan` says of a cluster its config would not use as the user expects."""

from __future__ import annotations

from dbparallel import cli

SMALL = ["model.depth=8", "train.batch_size=16", "model.blocks=4"]


def _plan(capsys, *overrides: str) -> str:
    assert cli.main(["plan", *SMALL, *overrides]) == 0
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
    out = _plan(capsys, *tight)
    assert ("does NOT fit: set train.checkpoint_layers=true, raise model.blocks (model.blocks="
            "auto picks the smallest that fits), runtime.replicas_per_block or "
            "train.micro_batches, lower train.batch_size") in out
    # one layer a block, checkpointed, one row a piece: only the batch and the model are left
    out = _plan(capsys, *tight, "model.blocks=8", "train.checkpoint_layers=true",
                "train.micro_batches=16")
    assert "does NOT fit: lower train.batch_size or use a smaller model;" in out
