"""Replicas inside a block (runtime.replicas_per_block): shares of the global batch, random
draws made for the global batch and cut, and two gloo processes that reproduce one."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from probes import random_batch

from dbparallel.config import ConfigError, load_config
from dbparallel.core.share import Share
from dbparallel.tasks import build_task
from dbparallel.training.checkpoint import BlockCheckpoints
from dbparallel.training.data_order import DataOrder
from dbparallel.training.data_pin import pin_data, run_data
from dbparallel.training.loop import BlockRun
from dbparallel.training.replicas import Replicas
from dbparallel.training.run_dir import open_run
from dbparallel.training.seeding import generator
from dbparallel.training.storage import Storage
from dbparallel.training.stream import _cut

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "jobs" / "tiny_cpu.yaml")
TEXT = ["data.source=shakespeare", "model.depth=2", "model.hidden=32", "model.heads=2",
        "data.seq_len=16", "sample.prompt_len=4", "sample.gen_len=8"]


@pytest.mark.parametrize("total,replicas", [(32, 2), (7, 3), (5, 5), (64, 4)])
def test_shares_cover_the_batch_once_and_evenly(total: int, replicas: int) -> None:
    shares = [Share.of(r, replicas, total) for r in range(replicas)]
    assert shares[0].start == 0 and shares[-1].stop == total
    assert all(a.stop == b.start for a, b in zip(shares, shares[1:], strict=False))
    assert max(s.rows for s in shares) - min(s.rows for s in shares) <= 1


def test_stream_shares_are_disjoint_and_make_up_the_batch() -> None:
    order = DataOrder([50, 30, 70], 40, seed=3, block=1, window_shards=1)
    for step in range(8):  # batches that straddle windows and epochs
        whole = [(s.epoch, s.window, int(r)) for s in order.segments(step) for r in s.rows]
        parts = [[(s.epoch, s.window, int(r)) for s in _cut(order.segments(step),
                                                             Share.of(k, 3, 40)) for r in s.rows]
                 for k in range(3)]
        assert parts[0] + parts[1] + parts[2] == whole


@pytest.mark.parametrize("overrides", [
    ["task=dit", "train.label_dropout=0.5"], ["task=vit"], ["task=mdm", *TEXT],
    ["task=ar", *TEXT], ["task=looped", *TEXT, "train.objective=end_to_end"],
], ids=["dit", "vit", "mdm", "ar", "looped-bptt"])
def test_a_share_of_the_loss_is_that_share_of_the_whole_batch_loss(overrides) -> None:
    cfg = load_config([TINY], ["model.blocks=1" if "task=looped" in overrides
                               else "model.blocks=2", *overrides])
    task = build_task(cfg)
    torch.manual_seed(0)
    net = task.build_block(0)
    batch = random_batch(task, 10, seed=1)
    whole = task.loss(net, batch, 0, generator(0, "step", 0, 5))
    parts = [task.loss(net, {k: s.cut(v) for k, v in batch.items()}, 0,
                       generator(0, "step", 0, 5), s) for s in (Share.of(r, 3, 10)
                                                                for r in range(3))]
    assert [len(p) for p in parts] == [4, 3, 3]
    torch.testing.assert_close(torch.cat(parts), whole, rtol=1e-5, atol=1e-6)


def test_replicas_must_fit_the_batch_and_need_ray() -> None:
    with pytest.raises(ConfigError, match="runtime.replicas_per_block"):
        load_config([TINY], ["runtime.replicas_per_block=64", "train.batch_size=32"])
    with pytest.raises(ConfigError, match="runtime.replicas_per_block"):
        load_config([TINY], ["runtime.replicas_per_block=2", "runtime.local=true"])
    with pytest.raises(ConfigError, match="debug.kill_replica"):
        load_config([TINY], ["runtime.replicas_per_block=2", "debug.kill_replica=2"])


STEPS = 8
PIECES = {"whole-shares": 1, "shares-in-2-pieces": 2}  # each replica's share, cut in


def _train_replica(rank: int, world: int, port: int, root: str) -> None:
    """Block 1 trained by this rank of ``world`` gloo replicas, once for each way of cutting
    the shares, into ``root``/two-<pieces>."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for pieces in PIECES.values():
            cfg = load_config([TINY], [f"run.dir={root}/two-{pieces}", f"train.steps={STEPS}",
                                       "train.batch_size=30", "train.grad_clip=0.5",
                                       f"train.micro_batches={pieces}"])
            storage = Storage(cfg.run_dir)
            run = BlockRun(cfg, 1, run_data(cfg, storage), storage, "cpu", session="s",
                           replicas=Replicas.from_process_group())
            run.train_until(STEPS)
            run.close()
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def gloo_runs(tmp_path_factory) -> Path:
    """Block 1 trained STEPS steps by one process (run directory ``one``) and by two gloo
    replicas (``two-<pieces>``, for each of PIECES): two processes started once for both."""
    from dbparallel.data.sources import open_data

    root = tmp_path_factory.mktemp("gloo")
    configs = {}
    for name in ("one", *(f"two-{p}" for p in PIECES.values())):
        cfg = load_config([TINY], [f"run.dir={root / name}", f"train.steps={STEPS}",
                                   "train.batch_size=30", "train.grad_clip=0.5"])
        storage = open_run(cfg)
        pin_data(storage, open_data(cfg.data))
        configs[name] = (cfg, storage)
    cfg, storage = configs["one"]
    run = BlockRun(cfg, 1, run_data(cfg, storage), storage, "cpu")
    run.train_until(STEPS)
    run.close()
    mp.start_processes(_train_replica, args=(2, _free_port(), str(root)), nprocs=2,
                       start_method="spawn")
    return root


@pytest.mark.parametrize("pieces", PIECES.values(), ids=PIECES.keys())
def test_two_gloo_replicas_reproduce_one_process(gloo_runs: Path, pieces: int) -> None:
    runs = {name: Storage(str(gloo_runs / name)) for name in ("one", f"two-{pieces}")}
    one, two = (BlockCheckpoints(s, 1, 3, 3).load_latest("state") for s in runs.values())
    assert one["step"] == two["step"] == STEPS
    for key in ("model", "ema"):
        for name, value in one[key].items():
            # the same update up to the order of float sums (gloo adds the two halves)
            torch.testing.assert_close(two[key][name], value, rtol=1e-4, atol=2e-5,
                                       msg=lambda m, k=key, n=name: f"{k}.{n}: {m}")
    assert one["recent_losses"] == pytest.approx(two["recent_losses"], rel=1e-5)
    # only rank 0 wrote: one history, one lease holder
    lines = (gloo_runs / f"two-{pieces}" / "blocks" / "block_1" / "metrics.jsonl").read_text() \
        .splitlines()
    assert [int(line.split('"step": ')[1].split(",")[0]) for line in lines] == [4, 8]
