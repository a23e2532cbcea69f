from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dbparallel.config import DataConfig, load_config
from dbparallel.data.sources import digits_table, open_data
from dbparallel.training.block_trainer import BlockTrainer, NonFiniteLoss
from dbparallel.training.checkpoint import BlockCheckpoints
from dbparallel.training.data_order import DataOrder
from dbparallel.training.loop import BlockRun
from dbparallel.training.storage import Storage

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def table():
    return open_data(DataConfig())  # the digits, indexed as every run streams them


def _weights(trainer: BlockTrainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.model.parameters()]


def _positions(order: DataOrder, steps: int) -> list[tuple[int, int]]:
    """(shard, row in shard) of every row the order visits in ``steps`` steps."""
    return [p for step in range(steps) for p in _positions_at(order, step)]


def test_data_order_visits_every_row_once_per_epoch() -> None:
    sizes = [5, 3, 4, 7, 1, 6]  # 26 rows in 6 shards, windows of 2 shards
    order = DataOrder(sizes, batch_size=4, seed=0, block=1, window_shards=2)
    every = sorted((s, r) for s, n in enumerate(sizes) for r in range(n))
    stream = _positions(order, 13)  # 52 positions = 2 epochs
    assert sorted(stream[:26]) == every and sorted(stream[26:]) == every
    assert stream[:26] != stream[26:]  # reshuffled each epoch
    # a window's rows are contiguous in the stream: at most 2 shards mixed at any point
    for i in range(0, 26, 4):
        assert len({s for s, _ in stream[i:i + 4]}) <= 4
    other = DataOrder(sizes, 4, 0, 0, 2)
    assert _positions(other, 13) != stream  # own order per block
    fresh = DataOrder(sizes, 4, 0, 1, 2)
    assert _positions(fresh, 13)[36:] == stream[36:]  # pure function of the step
    resumed = [p for step in range(9, 13) for p in _positions_at(fresh, step)]
    assert resumed == stream[36:]  # a resumed block starts mid-epoch, nothing before


def _positions_at(order: DataOrder, step: int) -> list[tuple[int, int]]:
    out = []
    for seg in order.segments(step):
        shards = order.shards_of(seg.epoch, seg.window)
        starts = [0]
        for s in shards:
            starts.append(starts[-1] + order.shard_rows[s])
        for r in seg.rows:
            k = max(i for i in range(len(shards)) if starts[i] <= r)
            out.append((shards[k], int(r) - starts[k]))
    return out


def test_one_window_is_a_row_permutation() -> None:
    order = DataOrder([10], batch_size=4, seed=0, block=1, window_shards=8)
    rows = [int(r) for s in range(5) for seg in order.segments(s) for r in seg.rows]
    assert sorted(rows[:10]) == list(range(10)) and sorted(rows[10:20]) == list(range(10))


def test_blocks_have_their_own_sigma_range(tiny_cfg) -> None:
    t0, t1 = BlockTrainer(tiny_cfg, 0), BlockTrainer(tiny_cfg, 1)
    assert t0.sigma_range[1] == tiny_cfg.noise.sigma_max
    assert t1.sigma_range[0] == tiny_cfg.noise.sigma_min
    assert t0.sigma_range[0] > t1.sigma_range[0]


def test_same_seed_same_weights(tiny_cfg, table, tmp_path) -> None:
    runs = [BlockRun(tiny_cfg, 0, table, Storage(str(tmp_path / name))) for name in "ab"]
    for run in runs:
        run.train_until(5)
    for a, b in zip(_weights(runs[0].trainer), _weights(runs[1].trainer), strict=True):
        assert torch.equal(a, b)
    assert runs[0].trainer.final_loss == runs[1].trainer.final_loss


def test_resume_is_exact(tiny_cfg, table, tmp_path) -> None:
    straight = BlockRun(tiny_cfg, 1, table, Storage(str(tmp_path / "straight")))
    straight.train_until(tiny_cfg.train.steps)
    storage = Storage(str(tmp_path / "resumed"))
    first = BlockRun(tiny_cfg, 1, table, storage, session="run")
    first.train_until(tiny_cfg.train.checkpoint_every + 2)  # dies after its checkpoint
    second = BlockRun(tiny_cfg, 1, table, storage, session="run")  # its restart
    assert second.resumed_from == tiny_cfg.train.checkpoint_every
    second.train_until(tiny_cfg.train.steps)
    assert second.trainer.final_loss == straight.trainer.final_loss
    for a, b in zip(_weights(second.trainer), _weights(straight.trainer), strict=True):
        assert torch.equal(a, b)


def test_changed_network_refuses_resume(tiny_cfg, table, tmp_path) -> None:
    from dbparallel.config import load_config
    from dbparallel.errors import RunDirError

    storage = Storage(str(tmp_path / "r"))
    first = BlockRun(tiny_cfg, 0, table, storage)
    first.train_until(6)
    first.close()
    other = load_config([], ["model.blocks=2", "model.depth=2", "model.hidden=48",
                             "model.heads=2"])
    with pytest.raises(RunDirError, match="model.hidden"):
        BlockRun(other, 0, table, storage)


def test_a_stop_between_the_state_and_its_snapshot_writes_the_snapshot_on_resume(
        tiny_cfg, table, tmp_path) -> None:
    """Stopped after the last step's training state, before its snapshot: the rerun, which
    trains no step, writes that snapshot, so the run is not assembled from the older one."""
    storage = Storage(str(tmp_path / "r"))
    run = BlockRun(tiny_cfg, 0, table, storage, session="run")
    save = run.checkpoints.save

    def stopped(kind, step, payload):
        if kind == "snapshot" and step == tiny_cfg.train.steps:
            raise KeyboardInterrupt
        return save(kind, step, payload)

    run.checkpoints.save = stopped
    with pytest.raises(KeyboardInterrupt):
        run.train_until(tiny_cfg.train.steps)
    run.close()
    ckpt = BlockCheckpoints(storage, 0)
    assert ckpt.steps("state") == [6, 12] and ckpt.steps("snapshot") == [6]
    rerun = BlockRun(tiny_cfg, 0, table, storage, session="run")
    assert rerun.resumed_from == 12 and rerun.done
    assert ckpt.steps("snapshot") == [12]
    snapshot, state = ckpt.load_latest("snapshot"), ckpt.load_latest("state")
    assert snapshot["meta"]["step"] == 12
    for name, weight in state["ema"].items():
        assert torch.equal(snapshot["ema"][name], weight)


def test_a_resume_trains_on_with_its_own_weight_decay(tiny_cfg, table, tmp_path) -> None:
    """train.weight_decay is a setting a resume may change (config.yaml then records it):
    the optimizer restored from the checkpoint takes it, not the value saved with it."""
    storage = Storage(str(tmp_path / "r"))
    first = BlockRun(tiny_cfg, 0, table, storage)
    first.train_until(6)
    first.close()
    decayed = load_config([ROOT / "jobs" / "tiny_cpu.yaml"], ["train.weight_decay=0.5"])
    resumed = BlockRun(decayed, 0, table, storage)
    assert resumed.resumed_from == 6
    assert [g["weight_decay"] for g in resumed.trainer.optimizer.param_groups] == [0.5]
    resumed.train_until(7)
    fresh = BlockTrainer(decayed, 0)  # the same state loaded into a trainer of this config
    fresh.load_state_dict(BlockCheckpoints(storage, 0).load_latest("state"))
    fresh.train_step(resumed.batch(6))
    for a, b in zip(_weights(fresh), _weights(resumed.trainer), strict=True):
        assert torch.equal(a, b)


def test_a_resume_deletes_the_checkpoints_a_stopped_writer_left_unlisted(table,
                                                                          tmp_path) -> None:
    """Stopped after its manifest dropped the snapshot of step 4 (keep_snapshots=1), before it
    deleted the file, or while it wrote a file: the rerun deletes those, and keeps every file
    its manifest lists."""
    cfg = load_config([ROOT / "jobs" / "tiny_cpu.yaml"], ["train.checkpoint_every=2"])
    storage = Storage(str(tmp_path / "r"))
    run = BlockRun(cfg, 0, table, storage, session="run")
    delete = storage.delete

    def stopped(rel: str) -> None:
        if rel.endswith("snapshot_00000004.pt"):
            raise KeyboardInterrupt
        delete(rel)

    storage.delete = stopped
    with pytest.raises(KeyboardInterrupt):
        run.train_until(12)
    storage.delete = delete
    run.close()
    block = tmp_path / "r" / "blocks" / "block_0"
    (block / "state_00000008.pt.tmp-0123abcd").write_bytes(b"torn")  # killed writing it
    (block / "manifest.json.tmp-4567cdef").write_bytes(b"{")  # killed writing the manifest
    assert sorted(p.name for p in block.glob("*.pt*")) == [
        "snapshot_00000004.pt", "snapshot_00000006.pt", "state_00000004.pt",
        "state_00000006.pt", "state_00000008.pt.tmp-0123abcd"]
    rerun = BlockRun(cfg, 0, table, storage, session="run")
    assert rerun.resumed_from == 6
    assert sorted(p.name for p in block.glob("*.pt*")) == [
        "snapshot_00000006.pt", "state_00000004.pt", "state_00000006.pt"]
    assert not list(block.glob("manifest.json.tmp-*"))
    rerun.close()


def test_corrupt_latest_checkpoint_falls_back(tiny_cfg, table, tmp_path, caplog) -> None:
    storage = Storage(str(tmp_path / "r"))
    run = BlockRun(tiny_cfg, 0, table, storage)
    run.train_until(12)  # states at 6 and 12
    ckpt = BlockCheckpoints(storage, 0)
    manifest = ckpt.manifest()
    assert [e["step"] for e in manifest["state"]] == [6, 12]
    latest = tmp_path / "r" / manifest["state"][-1]["file"]
    latest.write_bytes(latest.read_bytes()[:100])  # torn file
    state = ckpt.load_latest("state")
    assert state is not None and state["step"] == 6
    assert "corrupt" in caplog.text


def test_manifest_lists_only_existing_files(tiny_cfg, table, tmp_path) -> None:
    cfg = tiny_cfg
    cfg.train.checkpoint_every = 2
    storage = Storage(str(tmp_path / "r"))
    BlockRun(cfg, 0, table, storage).train_until(12)
    manifest = json.loads((tmp_path / "r/blocks/block_0/manifest.json").read_text())
    files = {p.name for p in (tmp_path / "r/blocks/block_0").iterdir()}
    listed = {e["file"].rsplit("/", 1)[1] for kind in ("state", "snapshot")
              for e in manifest[kind]}
    assert len(manifest["state"]) == cfg.train.keep_checkpoints
    assert listed <= files
    assert not [f for f in files if ".tmp" in f]


def test_nonfinite_loss_is_skipped_and_counted(tiny_cfg, table) -> None:
    trainer = BlockTrainer(tiny_cfg, 0)
    batch = trainer.task.decode(digits_table())
    batch = {k: v[:8] for k, v in batch.items()}
    before = _weights(trainer)
    bad = {**batch, "image": torch.full_like(batch["image"], float("nan"))}
    stats = trainer.train_step(bad)
    assert not stats.finite and trainer.nonfinite_steps == 1 and trainer.step == 1
    for a, b in zip(before, _weights(trainer), strict=True):
        assert torch.equal(a, b)
    tiny_cfg.train.nonfinite = "stop"
    with pytest.raises(NonFiniteLoss, match="block 0"):
        trainer.train_step(bad)


def test_a_steady_step_lists_no_module_parameters(tiny_cfg, table, monkeypatch) -> None:
    # Module.parameters() walks every submodule in Python; the clipping and the EMA update it
    # fed run after the step's wait for the device, so the GPU idled through the walks
    trainer = BlockTrainer(tiny_cfg, 0)
    batch = {k: v[:8] for k, v in trainer.task.decode(digits_table()).items()}
    trainer.train_step(batch)  # the first step counts FLOPs and memory
    calls = []
    walk = torch.nn.Module.parameters
    monkeypatch.setattr(torch.nn.Module, "parameters",
                        lambda self, *a, **k: calls.append(self) or walk(self, *a, **k))
    trainer.train_step(batch)
    assert calls == [] and trainer.ema_params[0] is not trainer.params[0]
    # a loaded state copies into the listed tensors: the lists stay the networks'
    trainer.load_state_dict(BlockTrainer(tiny_cfg, 0).state_dict())
    monkeypatch.undo()
    assert all(a is b for a, b in zip(trainer.params, trainer.model.parameters(), strict=True))
    assert all(a is b for a, b in zip(trainer.ema_params, trainer.ema.parameters(),
                                      strict=True))


def test_memory_meter_counts_adam_state(tiny_cfg, table) -> None:
    trainer = BlockTrainer(tiny_cfg, 0)
    batch = {k: v[:8] for k, v in trainer.task.decode(digits_table()).items()}
    trainer.train_step(batch)
    m = trainer.memory
    assert m is not None
    n_bytes = sum(p.numel() * 4 for p in trainer.model.parameters())
    assert (m.params, m.grads, m.optimizer) == (n_bytes, n_bytes, 2 * n_bytes)
    assert m.activations > 0


def test_plan_memory_estimate_equals_a_real_cpu_step(tiny_cfg) -> None:
    # `dbparallel plan` measures on the meta device; a real step on the CPU saves the same
    from dbparallel.training.plan import plan, step_bytes

    estimate = plan(tiny_cfg)["estimated_memory_bytes"]
    real = [step_bytes(tiny_cfg, b, device="cpu")["total"] for b in range(tiny_cfg.model.blocks)]
    assert estimate == real and all(e > 0 for e in estimate)


def test_block_steps_train_each_block_to_its_own_count(tiny_cfg, table, tmp_path) -> None:
    cfg = load_config([ROOT / "jobs" / "tiny_cpu.yaml"],
                      [f"run.dir={tmp_path / 'run'}", "model.blocks=2", "model.depth=2",
                       "train.block_steps=[3,2]", "train.checkpoint_every=100"])
    storage = Storage(str(tmp_path / "run"))
    runs = [BlockRun(cfg, b, table, storage) for b in range(2)]
    for run in runs:
        run.train_until(100)  # capped at the block's own count
        assert run.done
    assert [r.trainer.step for r in runs] == [3, 2]
    assert [r.checkpoints.steps("snapshot") for r in runs] == [[3], [2]]  # the last step
    # a block of the same seed and train.steps=2 takes the same two steps as block 1 here
    plain = BlockRun(load_config([ROOT / "jobs" / "tiny_cpu.yaml"],
                                 ["model.blocks=2", "model.depth=2", "train.steps=2"]),
                     1, table, Storage(str(tmp_path / "plain")))
    plain.train_until(100)
    for a, b in zip(_weights(plain.trainer), _weights(runs[1].trainer), strict=True):
        assert torch.equal(a, b)


def test_rebased_order_goes_on_from_its_position() -> None:
    sizes = [5, 3, 4, 7, 1, 6]
    before = DataOrder(sizes, batch_size=4, seed=0, block=1, window_shards=2)
    after = DataOrder(sizes, batch_size=3, seed=0, block=1, window_shards=2)
    after.rebase(5, before.position(5))  # resumed at step 5 with batches of 3
    stream = _positions(before, 13)  # 2 epochs
    went_on = [p for step in range(5, 15) for p in _positions_at(after, step)]
    assert stream[:20] + went_on == stream[:50]  # nothing skipped, nothing twice
    with pytest.raises(ValueError, match="comes before step 5"):
        after.position(4)


def test_resume_with_another_batch_size_goes_on_in_the_epoch(tiny_cfg, table,
                                                             tmp_path) -> None:
    storage = Storage(str(tmp_path / "run"))
    first = BlockRun(tiny_cfg, 0, table, storage, session="a")
    every = tiny_cfg.train.checkpoint_every
    first.train_until(every)
    first.close()
    smaller = load_config([ROOT / "jobs" / "tiny_cpu.yaml"],
                          [f"train.batch_size={tiny_cfg.train.batch_size // 2}"])
    second = BlockRun(smaller, 0, table, storage, session="b")
    assert second.resumed_from == every
    assert second.order.position(every) == every * tiny_cfg.train.batch_size
    assert second.order.position(every + 1) == (every * tiny_cfg.train.batch_size
                                                + smaller.train.batch_size)
    second.train_until(every + 2)
    second.save()
    second.close()
    third = BlockRun(smaller, 0, table, storage, session="c")  # its own checkpoint's position
    assert third.order.position(every + 2) == second.order.position(every + 2)
    third.close()


def test_checkpoint_without_a_position_is_at_its_own_batch_size() -> None:
    from dbparallel.training.resume import _go_on_in_order

    order = DataOrder([40], batch_size=2, seed=0, block=0, window_shards=1)
    _go_on_in_order(order, {"meta": {"config": {"train": {"batch_size": 8}}}}, 3)
    assert order.position(3) == 24 and order.position(4) == 26


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_resume_says_when_a_cosine_schedule_changed_length(schedule, tiny_cfg, table,
                                                            tmp_path, caplog) -> None:
    tiny = ROOT / "jobs" / "tiny_cpu.yaml"
    first = load_config([tiny], [f"train.lr_schedule={schedule}", "train.warmup_steps=0"])
    storage = Storage(str(tmp_path / "run"))
    run = BlockRun(first, 0, table, storage, session="a")
    run.train_until(first.train.checkpoint_every)
    run.close()
    longer = load_config([tiny], [f"train.lr_schedule={schedule}", "train.warmup_steps=0",
                                  f"train.steps={first.train.steps * 2}"])
    with caplog.at_level("WARNING"):
        BlockRun(longer, 0, table, storage, session="b").close()
    said = [r.getMessage() for r in caplog.records if "learning rate is" in r.getMessage()]
    if schedule == "constant":
        assert said == []
    else:
        assert len(said) == 1 and f"which trained with {first.train.steps} steps" in said[0]


def test_resume_within_the_warm_up_says_nothing_of_a_changed_cosine_length(
        table, tmp_path, caplog) -> None:
    """Every step before the resume was a warm-up step, whose rate does not depend on the
    schedule's length: the run goes on exactly as one of the new length from the start."""
    from dbparallel.training.schedule import learning_rate

    tiny = ROOT / "jobs" / "tiny_cpu.yaml"
    first = load_config([tiny], ["train.lr_schedule=cosine", "train.warmup_steps=8"])
    storage = Storage(str(tmp_path / "run"))
    run = BlockRun(first, 0, table, storage, session="a")
    run.train_until(first.train.checkpoint_every)  # 6 steps, all of the warm-up
    run.close()
    longer = load_config([tiny], ["train.lr_schedule=cosine", "train.warmup_steps=8",
                                  f"train.steps={first.train.steps * 2}"])
    assert [learning_rate(first.train, first.train.steps, s) for s in range(6)] == \
        [learning_rate(longer.train, longer.train.steps, s) for s in range(6)]
    with caplog.at_level("WARNING"):
        BlockRun(longer, 0, table, storage, session="b").close()
    assert not [r for r in caplog.records if "learning rate is" in r.getMessage()]
