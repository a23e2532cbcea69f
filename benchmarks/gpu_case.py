"""One configuration of benchmarks/gpu_speed.py and its measurement: what it is (``Spec``),
where and how long it runs (``Setting``), the Config it trains, and the row it gives.

Ray-free (torch and dbparallel's Ray-free layers only), as benchmarks/gpu.sh needs: it runs
gpu_speed.py on a CUDA machine without Ray.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from dbparallel.config import (
    Config,
    DataConfig,
    ModelConfig,
    RunConfig,
    SampleConfig,
    TrainConfig,
)

BLOCKS = 3  # a block row trains block 0 of these; sampling composes them all


@dataclass(frozen=True)
class Spec:
    """One configuration: ``kind`` train | sample; ``scope`` block | e2e (train only)."""

    kind: str
    model: str
    scope: str
    precision: str
    compiled: bool
    mode: str = "default"  # train.compile_mode of a compiled training row

    @property
    def name(self) -> str:
        mode = "compiled" if self.compiled else "eager"
        other = "" if self.mode == "default" else f"/{self.mode}"
        return f"{self.model}/{self.kind}/{self.scope}/{self.precision}/{mode}{other}"


@dataclass(frozen=True)
class Setting:
    """Where and how long: a CUDA device at full size, or the CPU with a tiny model."""

    device: str = "cuda"
    image_size: int = 32
    depth: int = 12  # layers of the whole network
    batch: int = 128
    steps: int = 20  # timed training steps at most
    max_timed_s: float = 8.0  # ... or this long, whichever comes first
    warmup: int = 2  # steady steps before timing (after the counted and compiling steps)
    sample_images: int = 256
    sample_steps: int = 50
    preset: str | None = None  # override of the model preset (smoke: tiny)


SMOKE = Setting("cpu", 8, depth=6, batch=8, steps=2, max_timed_s=5.0, warmup=0,
                sample_images=4, sample_steps=3, preset="tiny")


def config(spec: Spec, s: Setting) -> Config:
    blocks = 1 if spec.scope == "e2e" else BLOCKS
    return Config(
        task="dit", run=RunConfig(name="gpu-speed"),
        data=DataConfig(source="parquet", path="synthetic", image_size=s.image_size, channels=3),
        model=ModelConfig(preset=s.preset or spec.model, blocks=blocks, depth=s.depth),
        train=TrainConfig(batch_size=s.batch, warmup_steps=0, precision=spec.precision,
                          compile=spec.compiled, compile_mode=spec.mode,
                          objective="end_to_end" if blocks == 1 else "diffusionblocks"),
        sample=SampleConfig(steps=s.sample_steps, cfg_scale=2.0),
    )


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _peak_bytes(device: str) -> int | None:
    return torch.cuda.max_memory_allocated() if device == "cuda" else None


def _memory_beside(cfg: Config, device: str) -> dict[str, int | None]:
    """What to hold the plan's 90% of runtime.device_memory (training/cluster_fit.py) against:
    the plan's count of this step (``plan_bytes``: under CUDA's autocast lists where
    train.precision=bf16), the allocator's reserved peak, and the device memory in use outside the
    allocator (``outside_allocator_bytes``: the CUDA context and libraries, this process
    alone on the device)."""
    from dbparallel.training.plan import step_bytes

    out: dict[str, int | None] = {"plan_bytes": step_bytes(cfg, 0)["total"],
                                  "peak_reserved_bytes": None, "outside_allocator_bytes": None}
    if device == "cuda":
        free, total = torch.cuda.mem_get_info()
        out["peak_reserved_bytes"] = torch.cuda.max_memory_reserved()
        out["outside_allocator_bytes"] = total - free - torch.cuda.memory_reserved()
    return out


def measure_training(spec: Spec, s: Setting) -> dict[str, Any]:
    """Step time, samples/s, allocator peak and MFU of block 0 (or the whole network)."""
    from dbparallel.training.block_trainer import BlockTrainer

    cfg = config(spec, s)
    trainer = BlockTrainer(cfg, 0, s.device)
    g = torch.Generator().manual_seed(0)
    n = cfg.train.batch_size
    batch = {"image": (torch.rand(n, 3, s.image_size, s.image_size, generator=g) * 2 - 1),
             "label": torch.randint(0, 10, (n,), generator=g)}
    batch = {k: v.to(s.device) for k, v in batch.items()}
    first = trainer.train_step(batch).step_time_s  # eager: counts FLOPs and memory
    compile_s = trainer.train_step(batch).step_time_s if spec.compiled else None
    for _ in range(s.warmup):
        trainer.train_step(batch)
    _sync(s.device)
    if s.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start, steps = time.perf_counter(), 0
    while steps < s.steps and (steps < 2 or time.perf_counter() - start < s.max_timed_s):
        trainer.train_step(batch)
        steps += 1
    _sync(s.device)
    step_time = (time.perf_counter() - start) / steps
    flops = trainer.model_flops_per_step
    achieved = flops / step_time / 1e12 if flops else None
    return {"params": sum(p.numel() for p in trainer.model.parameters()),
            "layers": cfg.model.layers_per_block, "batch": n, "timed_steps": steps,
            "step_time_s": step_time, "samples_per_s": n / step_time,
            "peak_allocated_bytes": _peak_bytes(s.device), **_memory_beside(cfg, s.device),
            "model_flops_per_step": flops,
            "achieved_tflops": achieved, "peak_tflops": trainer.peak_tflops,
            "mfu": achieved / trainer.peak_tflops if achieved and trainer.peak_tflops else None,
            "first_step_s": first, "compile_step_s": compile_s}


@torch.no_grad()
def measure_sampling(spec: Spec, s: Setting) -> dict[str, Any]:
    """Images/s of the B blocks composed: sample.steps Euler steps with guidance."""
    from dbparallel.tasks.image_generation import ImageGeneration
    from dbparallel.training.precision import set_matmul_precision

    cfg = config(spec, s)
    set_matmul_precision(spec.precision, s.device)
    task = ImageGeneration(cfg)
    nets = [task.build_block(b).to(s.device).eval() for b in range(BLOCKS)]
    if spec.compiled:
        for net in nets:
            net.compile()
    labels = (torch.arange(s.sample_images) % 10).to(s.device)
    start = time.perf_counter()
    task.generate(nets, labels, torch.Generator().manual_seed(0))  # warm-up: same shapes
    _sync(s.device)
    warmup_s = time.perf_counter() - start
    if s.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    task.generate(nets, labels, torch.Generator().manual_seed(1))
    _sync(s.device)
    seconds = time.perf_counter() - start
    return {"images": s.sample_images, "steps": s.sample_steps, "seconds": seconds,
            "images_per_s": s.sample_images / seconds, "warmup_s": warmup_s,
            "peak_allocated_bytes": _peak_bytes(s.device)}


def measure(spec: Spec, s: Setting) -> dict[str, Any]:
    name = torch.cuda.get_device_name(0) if s.device == "cuda" else "cpu"
    row = {"name": spec.name, **asdict(spec), "device": name}
    if spec.kind == "train":
        return {**row, **measure_training(spec, s)}
    return {**row, **measure_sampling(spec, s)}
