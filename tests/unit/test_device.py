"""One device policy: a GPU asked for and absent is an error naming what asked; none asked is
the CPU. This machine's torch finds no CUDA device; a test that needs one to be "here" says so
to torch through monkeypatch."""

from __future__ import annotations

import pytest
import torch

from dbparallel.errors import UserError
from dbparallel.training.device import (
    assembly_device,
    block_device,
    requested_device,
)

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_nothing_asked_is_the_cpu(tiny_cfg) -> None:
    assert block_device(tiny_cfg) == block_device(tiny_cfg, "cuda:1") == "cpu"
    assert assembly_device(tiny_cfg) == "cpu"
    assert requested_device(None) == "cpu" and requested_device("cpu") == "cpu"


@no_cuda
def test_block_gpu_without_cuda_names_the_key(tiny_cfg) -> None:
    tiny_cfg.runtime.gpus_per_block = 0.5
    with pytest.raises(UserError, match=r"runtime\.gpus_per_block=0\.5 asks for a GPU"):
        block_device(tiny_cfg)
    assert assembly_device(tiny_cfg) == "cpu"  # the assembly asks with its own key


@no_cuda
def test_assembly_gpu_without_cuda_names_the_key(tiny_cfg) -> None:
    tiny_cfg.runtime.assembly_gpus = 1
    with pytest.raises(UserError, match=r"runtime\.assembly_gpus=1 asks for a GPU"):
        assembly_device(tiny_cfg)
    assert block_device(tiny_cfg) == "cpu"


@no_cuda
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_requested_cuda_without_cuda_names_the_device(tiny_cfg, name: str) -> None:
    with pytest.raises(UserError, match=f"^device='{name}' asks for a GPU.*; use "
                                        f"device='cpu'$"):
        requested_device(name)
    with pytest.raises(UserError, match=f"^--device {name} asks for a GPU.*; use --device "
                                        f"cpu$"):
        requested_device(name, "--device")  # as a command names it


def test_requested_device_must_be_cpu_or_cuda() -> None:
    for name in ("tpu", "meta", "cuda:x"):
        with pytest.raises(UserError, match="expected cpu, cuda or cuda:N"):
            requested_device(name)
    for value in (0, 1, 0.0):  # 0 was taken as nothing asked, the CPU; 1 as cuda:1
        with pytest.raises(UserError, match=r"^device: expected cpu, cuda or cuda:N \(a string\)"):
            requested_device(value)
    assert requested_device(torch.device("cpu")) == "cpu"


def test_gpu_where_asked_and_present(tiny_cfg, fake_cuda) -> None:
    tiny_cfg.runtime.gpus_per_block = 1
    assert (block_device(tiny_cfg), assembly_device(tiny_cfg)) == ("cuda", "cpu")
    assert block_device(tiny_cfg, "cuda:1") == "cuda:1"  # a Ray Train worker's own
    tiny_cfg.runtime.assembly_gpus = 1
    assert assembly_device(tiny_cfg) == "cuda"
    assert requested_device("cuda:1") == "cuda:1"
    with pytest.raises(UserError, match="has 2 CUDA device"):
        requested_device("cuda:2")


@no_cuda
def test_local_run_refuses_before_writing_anything(tiny_cfg, tmp_path) -> None:
    from dbparallel.runtime.local import run_local

    tiny_cfg.runtime.assembly_gpus = 1
    with pytest.raises(UserError, match=r"runtime\.assembly_gpus"):
        run_local(tiny_cfg, progress=False)
    assert not (tmp_path / "run").exists()


@no_cuda
def test_a_block_actor_starts_again_when_its_data_was_unreachable(tiny_cfg,
                                                                    monkeypatch) -> None:
    """A start that met unreachable data (which may pass) is tried again at the next call,
    which the driver makes for such errors; bad input is not (it would meet it again)."""
    from dbparallel.errors import DataUnreachable, RunDirError
    from dbparallel.runtime.block_actor import BlockActor

    outcomes = [DataUnreachable("s3: throttled"), None]

    class Run:  # stands in for the block's BlockRun: what a start makes
        def train_until(self, until: int, on_step=None) -> None:
            self.until = until

    def start(self, session: str) -> None:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome
        self.run, self.restarts = Run(), 0

    monkeypatch.setattr(BlockActor, "_start", start)
    monkeypatch.setattr(BlockActor, "progress", lambda self: {"until": self.run.until})
    actor = BlockActor(tiny_cfg, 0, "session", "0123456789ab")
    assert isinstance(actor.failed, DataUnreachable)
    assert actor.train(3) == {"until": 3}  # started at this call, then trained
    assert actor.failed is None and not outcomes
    outcomes[:] = [RunDirError("damaged"), None]
    refused = BlockActor(tiny_cfg, 0, "session", "0123456789ab")
    with pytest.raises(RunDirError, match="damaged"):
        refused.train(1)
    assert outcomes == [None]  # not started again


def test_the_assembler_actor_refuses_a_missing_gpu(tiny_cfg) -> None:
    # the actor class is a plain class until launch.py applies ray.remote; a block actor
    # chooses its device once it holds its block (tests/unit/test_block_actor.py)
    from dbparallel.runtime.assembler_actor import AssemblerActor

    tiny_cfg.runtime.assembly_gpus = 1
    with pytest.raises(UserError, match=r"runtime\.assembly_gpus"):
        AssemblerActor(tiny_cfg, "0123456789ab")


@no_cuda
def test_load_on_cuda_without_cuda_names_the_device(tiny_cfg) -> None:
    from dbparallel.training.network import Network

    with pytest.raises(UserError, match="device='cuda'"):
        Network.from_weights(tiny_cfg, [], [], "cuda")


def test_a_state_saved_on_another_device_kind_keeps_this_trainers_fused_flag(tiny_cfg) -> None:
    # A CUDA trainer's AdamW is fused and saves fused=True in its param groups (its checkpoint
    # is read with map_location="cpu"); the CPU's is not. A resume on the other kind of device
    # keeps its own flag (a CPU run resumed on a GPU would otherwise step unfused there).
    from dbparallel.data.sources import digits_table
    from dbparallel.training.block_trainer import BlockTrainer

    saved = BlockTrainer(tiny_cfg, 0)
    batch = {k: v[:8] for k, v in saved.task.decode(digits_table()).items()}
    saved.train_step(batch)
    state = saved.state_dict()
    optim = state["optimizer"]
    state["optimizer"] = {**optim, "param_groups": [{**g, "fused": True}
                                                    for g in optim["param_groups"]]}
    resumed = BlockTrainer(tiny_cfg, 0)
    resumed.load_state_dict(state)
    assert [g["fused"] for g in resumed.optimizer.param_groups] == [False]
    assert resumed.train_step(batch).finite and resumed.step == 2
