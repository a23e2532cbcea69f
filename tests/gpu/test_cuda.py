"""CUDA checks of the Ray-free layers (opt-in: pytest -m gpu; benchmarks/gpu.sh runs them)."""

from __future__ import annotations

import pytest
import torch

from dbparallel.config import Config, ModelConfig, RunConfig, TrainConfig

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _cfg(tmp_path, steps: int = 30) -> Config:
    return Config(run=RunConfig(dir=str(tmp_path / "run"), name="gpu-test"),
                  model=ModelConfig(blocks=2, depth=4),
                  train=TrainConfig(steps=steps, batch_size=64, log_every=10,
                                    checkpoint_every=15))


def test_gpu_loss_matches_cpu_loss_on_the_same_draws(tmp_path) -> None:
    from dbparallel.data.sources import digits_table
    from dbparallel.training.block_trainer import BlockTrainer
    from dbparallel.training.seeding import generator

    torch.backends.cuda.matmul.allow_tf32 = False
    cfg = _cfg(tmp_path)
    cpu, gpu = BlockTrainer(cfg, 1, "cpu"), BlockTrainer(cfg, 1, "cuda")  # the same weights
    data = cpu.task.decode(digits_table())
    batch = {k: v[:64] for k, v in data.items()}
    on_gpu = {k: v.cuda() for k, v in batch.items()}
    draws = cpu.task.draw(1, batch, 64, generator(0, "same draws"))
    a = cpu.task.loss_on(cpu.model, batch, 1, draws)
    b = gpu.task.loss_on(gpu.model, on_gpu, 1, {k: v.cuda() for k, v in draws.items()})
    torch.testing.assert_close(b.cpu(), a, rtol=1e-3, atol=1e-5)
    # A CUDA block draws its noise on the GPU: other numbers than the CPU's, the same steps
    for _ in range(3):
        assert cpu.train_step(batch).finite and gpu.train_step(on_gpu).finite
    g, c = gpu.memory, cpu.memory
    assert g is not None and c is not None
    assert (g.params, g.grads, g.optimizer) == (c.params, c.grads, c.optimizer)
    # Fused CUDA attention saves a few buffers of its own (e.g. log-sum-exp rows).
    assert abs(g.activations - c.activations) <= 0.01 * c.activations


def test_gpu_draws_are_made_on_the_gpu_and_repeat_with_the_seed(tmp_path) -> None:
    from dbparallel.data.sources import digits_table
    from dbparallel.tasks.base import share_draws
    from dbparallel.training.block_trainer import BlockTrainer
    from dbparallel.training.noise_stats import noise_stats
    from dbparallel.training.seeding import generator

    cfg = _cfg(tmp_path)
    cfg.train.augment = "flip_crop"
    one, two = BlockTrainer(cfg, 1, "cuda"), BlockTrainer(cfg, 1, "cuda")
    batch = {k: v[:64].cuda() for k, v in one.task.decode(digits_table()).items()}
    made = one.task.draw(1, batch, 64, generator(cfg.run.seed, "step", 1, 0, device="cuda"))
    assert all(v.is_cuda and len(v) == 64 for v in made.values())  # made there, not moved
    draws = share_draws(one.task, 1, batch, None,
                        generator(cfg.run.seed, "step", 1, 0, device="cuda"))
    assert sorted(draws) == ["dropped", "eps", "flip", "offset", "sigma"]
    assert all(torch.equal(made[k], draws[k]) for k in draws)
    lo, hi = one.sigma_range
    assert bool(((draws["sigma"] >= lo * 0.999) & (draws["sigma"] <= hi * 1.001)).all())
    # two trainers with one seed take the same steps (CUDA's atomic gradient sums may round
    # differently after the first); the step's noise levels are found again
    a = [one.train_step(batch).loss for _ in range(3)]
    b = [two.train_step(batch).loss for _ in range(3)]
    assert a[0] == b[0] and a == pytest.approx(b, rel=1e-5)
    stats = noise_stats(cfg, one.task, 1, range(1), "cuda")
    assert stats is not None and stats["noise_min"] == pytest.approx(float(draws["sigma"].min()))


TEXT = ["data.source=shakespeare", "model.depth=2", "model.hidden=64", "model.heads=2",
        "data.seq_len=32", "sample.prompt_len=4", "sample.gen_len=8"]
STEADY = {"dit": ["task=dit", "train.augment=flip_crop"], "vit": ["task=vit"],
          "mdm": ["task=mdm", *TEXT], "ar": ["task=ar", *TEXT],
          "ar-checkpointed": ["task=ar", *TEXT, "train.checkpoint_layers=true"],
          "looped-bptt": ["task=looped", *TEXT, "model.blocks=1",
                          "train.objective=end_to_end"]}


def _tiny_on_gpu(tmp_path, overrides: list[str]):
    """The tiny recipe with ``overrides``: its config, block 0's trainer on the GPU, and a
    batch of 8 random rows of the task's shapes there."""
    from pathlib import Path

    from dbparallel.config import load_config
    from dbparallel.training.block_trainer import BlockTrainer

    tiny = Path(__file__).resolve().parents[2] / "jobs" / "tiny_cpu.yaml"
    blocks = [] if "model.blocks=1" in overrides else ["model.blocks=2"]
    cfg = load_config([tiny], [*blocks, "train.batch_size=8", *overrides,
                               f"run.dir={tmp_path / 'run'}"])
    trainer = BlockTrainer(cfg, 0, "cuda")
    g = torch.Generator().manual_seed(0)
    batch = {k: (torch.rand(v.shape, generator=g) * 2 - 1 if v.is_floating_point()
                 else torch.randint(0, 4, v.shape, generator=g)).cuda()
             for k, v in trainer.task.example_batch(8, "cpu").items()}
    return cfg, trainer, batch


@pytest.mark.parametrize("overrides", STEADY.values(), ids=STEADY.keys())
def test_a_steady_step_never_waits_for_the_gpu_before_its_loss_is_read(tmp_path,
                                                                         overrides) -> None:
    """Draws, forward and backward of a step make no synchronising call (no host-to-device
    copy, no read of a device value): CUDA's sync debug mode raises on one."""
    from dbparallel.tasks.base import share_draws
    from dbparallel.training.seeding import generator

    cfg, trainer, batch = _tiny_on_gpu(tmp_path, overrides)
    assert trainer.train_step(batch).finite  # the measured first step
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        draws = share_draws(trainer.task, 0, batch, None,
                            generator(cfg.run.seed, "step", 0, 1, device="cuda"))
        trainer._loss(batch, draws, None).backward()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert any(p.grad is not None for p in trainer.model.parameters())


FLASH = {"dit": ["task=dit"], "vit": ["task=vit"], "mdm": ["task=mdm", *TEXT],
         "ar-clean-stream": ["task=ar", *TEXT]}


@pytest.mark.parametrize("overrides", FLASH.values(), ids=FLASH.keys())
def test_flash_attention_runs_where_no_mask_is_needed(tmp_path, overrides) -> None:
    """Under bf16 the attention of DiT, ViT and MDM, and the AR clean stream (is_causal), run
    with SDPA restricted to the flash kernel: SDPA raises if the call cannot take it."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from dbparallel.tasks.base import share_draws
    from dbparallel.training.precision import autocast
    from dbparallel.training.seeding import generator

    cfg, trainer, batch = _tiny_on_gpu(tmp_path, ["train.precision=bf16", *overrides])
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        if cfg.task == "ar":  # the noisy stream's mask needs another kernel
            with autocast("bf16", trainer.device):
                h, _ = trainer.model.clean(batch["tokens"])
            h.float().square().sum().backward()
        else:
            draws = share_draws(trainer.task, 0, batch, None,
                                generator(cfg.run.seed, "step", 0, 0, device="cuda"))
            trainer._loss(batch, draws, None).backward()
    assert any(p.grad is not None for p in trainer.model.parameters())


def test_local_run_on_gpu_writes_report(tmp_path) -> None:
    from dbparallel.runtime.local import run_local

    cfg = _cfg(tmp_path)
    cfg.runtime.gpus_per_block = 1
    cfg.sample.eval_samples = 100
    cfg.metrics.port = 0  # no metrics endpoint: nothing else may hold a port there
    report = run_local(cfg, None, progress=False)
    assert [row["steps"] for row in report["per_block"]] == [30, 30]
    assert 0.0 <= report["assembly"]["sample_accuracy"] <= 1.0
    assert (tmp_path / "run" / "samples.png").is_file()


def test_gpu_trainer_uses_fused_adamw_and_reports_mfu(tmp_path) -> None:
    from dbparallel.data.sources import digits_table
    from dbparallel.training.block_trainer import BlockTrainer
    from dbparallel.training.peaks import peak_tflops

    cfg = _cfg(tmp_path)
    cfg.train.precision = "bf16"
    trainer = BlockTrainer(cfg, 0, "cuda")
    assert trainer.optimizer.defaults["fused"] is True
    batch = {k: v[:64].cuda() for k, v in trainer.task.decode(digits_table()).items()}
    for _ in range(3):
        assert trainer.train_step(batch).finite
    assert trainer.model_flops_per_step > 0 and trainer.achieved_tflops > 0
    peak = peak_tflops(torch.cuda.get_device_name(), "bf16")
    if peak is None:
        assert trainer.mfu is None  # a device without a listed peak
    else:
        assert 0 < trainer.mfu < 1 and trainer.mfu == trainer.achieved_tflops / peak


@pytest.mark.parametrize("pixels", ["float", "uint8"])
def test_a_cuda_stream_gathers_the_next_batch_ahead_into_pinned_memory(tmp_path, pixels) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dbparallel.data.parquet_index import parquet_index
    from dbparallel.data.tables import image_table
    from dbparallel.tasks import build_task
    from dbparallel.training.data_order import DataOrder
    from dbparallel.training.stream import BlockStream

    rng = np.random.default_rng(0)
    path = tmp_path / "d.parquet"
    values, labels = rng.integers(0, 256, (600, 1, 8, 8)), rng.integers(0, 10, 600)
    table = image_table(values / 255.0, labels)
    if pixels == "uint8":  # bytes travel to the device and become floats there
        table = table.set_column(0, table.field(0).name, pa.FixedSizeListArray.from_arrays(
            pa.array(values.ravel().astype(np.uint8)), 64))

    def same(a: torch.Tensor, b: torch.Tensor) -> bool:
        # CUDA divides by a host scalar as a product with its inverse: 8-bit pixels may land
        # one float32 ulp from the CPU's quotient
        if pixels == "uint8" and a.is_floating_point():
            return torch.allclose(a, b, rtol=2e-7, atol=0)
        return torch.equal(a, b)

    pq.write_table(table, path, row_group_size=50)
    cfg = _cfg(tmp_path)
    cfg.data.source, cfg.data.path, cfg.data.image_size, cfg.data.channels = \
        "parquet", str(path), 8, 1
    index, task = parquet_index(str(path)), build_task(cfg)
    order = DataOrder([s.rows for s in index.shards("train")], 70, 0, 1, 2)
    gpu = BlockStream(index, "train", order, task, "cuda")
    cpu = BlockStream(index, "train", order, task, "cpu", prefetch=False)
    for step in range(20):  # past an epoch
        got, want = gpu.batch(step), cpu.batch(step)
        assert all(got[k].is_cuda and same(got[k].cpu(), want[k]) for k in want)
        assert gpu._ahead is not None and gpu._ahead[0] == step + 1
        assert all(v.is_pinned() for v in gpu._ahead[1].result().values())
    gpu.close(), cpu.close()


def test_images_encode_on_the_gpu_and_their_latents_train_and_decode_there(
        tmp_path, monkeypatch) -> None:
    """dbparallel.encode with device="cuda" (no Ray: the Ray-free layers), then a local run
    on the latents with a GPU per block, its samples decoded by sample.decoder on the GPU."""
    from pathlib import Path

    import dbparallel
    from dbparallel.config import load_config
    from dbparallel.runtime.local import run_local

    recipe = Path(__file__).resolve().parents[2] / "jobs" / "tiny_cpu.yaml"
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 4, 2, stride=2).cuda()
    devices = set()

    def encode(images: torch.Tensor) -> torch.Tensor:
        devices.add(images.device.type)
        return conv(images)

    got = dbparallel.encode(recipe, encode, tmp_path / "latents", device="cuda")
    assert devices == {"cuda"} and got["shape"] == [4, 4, 4]
    (tmp_path / "gpu_decoder.py").write_text(
        "import torch.nn.functional as F\n"
        "def decode(latents):\n"
        "    assert latents.is_cuda\n"
        "    return F.interpolate(latents[:, :1], scale_factor=2).sigmoid()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    items = [f"{k}={str(v).lower() if isinstance(v, bool) else v}"
             for k, v in got["settings"].items()]
    cfg = load_config([str(recipe)], [*items, f"run.dir={tmp_path / 'run'}", "metrics.port=0",
                                      "runtime.gpus_per_block=1", "runtime.assembly_gpus=1",
                                      "sample.decoder=gpu_decoder:decode", "train.steps=20"])
    report = run_local(cfg, None, progress=False)
    assert all(torch.isfinite(torch.tensor(row["final_loss"])) for row in report["per_block"])
    assert (tmp_path / "run" / "samples.png").is_file()  # decoded on the GPU


def test_compiled_step_matches_eager_on_gpu(tmp_path) -> None:
    import copy

    from dbparallel.data.sources import digits_table
    from dbparallel.training.block_trainer import BlockTrainer

    cfg = _cfg(tmp_path)  # fp32: TF32 off, so eager and compiled differ only by fusion
    compiled_cfg = copy.deepcopy(cfg)
    compiled_cfg.train.compile = True
    eager, compiled = BlockTrainer(cfg, 1, "cuda"), BlockTrainer(compiled_cfg, 1, "cuda")
    batch = {k: v[:64].cuda() for k, v in eager.task.decode(digits_table()).items()}
    for _ in range(3):
        a, b = eager.train_step(batch), compiled.train_step(batch)
        assert b.loss == pytest.approx(a.loss, rel=1e-4)
    assert compiled.timed_steps == 1 and compiled.achieved_tflops > 0


def test_cuda_graphs_train_a_step_in_pieces(tmp_path) -> None:
    """train.compile_mode=reduce-overhead with two pieces a step: the second piece adds its
    gradient into the first's, which the replay of its CUDA graph would have overwritten had
    the first been left in the graphs' pool (BlockTrainer keeps gradients allocated)."""
    import copy

    from dbparallel.data.sources import digits_table
    from dbparallel.training.block_trainer import BlockTrainer

    cfg = _cfg(tmp_path)  # fp32, TF32 off
    cfg.train.micro_batches = 2
    graphs = copy.deepcopy(cfg)
    graphs.train.compile, graphs.train.compile_mode = True, "reduce-overhead"
    eager, compiled = BlockTrainer(cfg, 1, "cuda"), BlockTrainer(graphs, 1, "cuda")
    batch = {k: v[:64].cuda() for k, v in eager.task.decode(digits_table()).items()}
    for _ in range(4):  # counted eagerly, compiled (and warmed up), recorded, replayed
        a, b = eager.train_step(batch), compiled.train_step(batch)
        assert b.loss == pytest.approx(a.loss, rel=1e-4)
