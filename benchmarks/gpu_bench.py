"""GPU benchmark of DiffusionBlocks against end to end for DiT-S/2 at 32x32 (one CUDA device).

Measured side by side in one run, with the Ray-free layers only (no Ray, no omegaconf needed):
  1. CUDA-allocator peak memory and step time of one training step: one block (L/B layers,
     its private stem and head) against the whole network trained end to end, batch 128, 256;
  2. B blocks training at once on the one GPU as separate processes (what B actors sharing a
     card do) against one block alone: aggregate samples/s;
  3. sampling throughput: 50 Euler steps with classifier-free guidance, each step running one
     block, against the end-to-end DiT at the same number of steps.
Inputs are synthetic (random pixels and labels): time and memory do not depend on content.

    python benchmarks/gpu_bench.py --out benchmarks/results/gpu.json
    python benchmarks/gpu_bench.py --smoke --out /tmp/smoke/gpu.json  # tiny, CPU, 2 steps
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.provenance import provenance  # noqa: E402
from dbparallel.config import (  # noqa: E402
    Config,
    DataConfig,
    ModelConfig,
    RunConfig,
    SampleConfig,
    TrainConfig,
)
from dbparallel.tasks.image_generation import ImageGeneration  # noqa: E402
from dbparallel.training.block_trainer import BlockTrainer  # noqa: E402

DEPTH = 12  # DiT-S/2: 12 layers, width 384, 6 heads, patch 2 (Peebles & Xie 2023)
# --smoke: the same measurements on a tiny model and on the CPU, to check the script itself:
# a few steps, images and sampler steps (what it measures is not the point), unless given
SMOKE = "--smoke" in sys.argv
DEVICE = "cpu" if SMOKE else "cuda"
SIZE, PRESET = (8, "tiny") if SMOKE else (32, "dit-s")
SAMPLE_STEPS = 3 if SMOKE else 50  # Euler steps of the sampler
# the counts' defaults: (on a GPU, --smoke)
COUNTS = {"steps": (30, 2), "warmup": (5, 1), "sample_images": (512, 4)}


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def dit_s(blocks: int, batch: int) -> Config:
    """DiT-S/2 on 32x32x3 images; blocks=1 is the end-to-end model over the whole range."""
    return Config(
        task="dit",
        run=RunConfig(name="gpu-bench"),
        data=DataConfig(source="parquet", path="synthetic", image_size=SIZE, channels=3),
        model=ModelConfig(preset=PRESET, blocks=blocks, depth=DEPTH, patch_size=2),
        train=TrainConfig(batch_size=batch, warmup_steps=0, precision="tf32",
                          objective="end_to_end" if blocks == 1 else "diffusionblocks"),
        sample=SampleConfig(steps=SAMPLE_STEPS, cfg_scale=2.0),
    )


def synthetic_batch(batch: int, device: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"image": (torch.rand(batch, 3, SIZE, SIZE, generator=g) * 2 - 1).to(device),
            "label": torch.randint(0, 10, (batch,), generator=g).to(device)}


def time_training(cfg: Config, block: int, steps: int, warmup: int) -> dict[str, float]:
    """Peak allocator bytes and mean step time of ``block`` (after warm-up)."""
    if DEVICE == "cuda":
        torch.cuda.empty_cache()
    trainer = BlockTrainer(cfg, block, DEVICE)
    batch = synthetic_batch(cfg.train.batch_size, DEVICE)
    for _ in range(warmup):
        trainer.train_step(batch)
    sync()
    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(batch)
    sync()
    step_time = (time.perf_counter() - start) / steps
    result = {
        "peak_allocated_bytes": torch.cuda.max_memory_allocated() if DEVICE == "cuda" else 0,
        "meter_bytes": trainer.memory.total if trainer.memory else 0,
        "params": sum(p.numel() for p in trainer.model.parameters()),
        "step_time_s": step_time,
        "samples_per_s": cfg.train.batch_size / step_time,
    }
    del trainer, batch
    return result


def worker(args: argparse.Namespace) -> None:
    """One block in its own process: warm up, wait for the others, time ``steps`` steps."""
    cfg = dit_s(args.blocks, args.batch)
    trainer = BlockTrainer(cfg, args.block, DEVICE)
    batch = synthetic_batch(args.batch, DEVICE)
    for _ in range(args.warmup):
        trainer.train_step(batch)
    sync()
    sync_dir = Path(args.sync)
    (sync_dir / f"ready_{args.block}").touch()
    deadline = time.monotonic() + 240  # a block that never comes ends the wait
    while len(list(sync_dir.glob("ready_*"))) < args.blocks:
        if time.monotonic() > deadline:
            raise SystemExit(f"block {args.block}: the other blocks were not ready in 240 s")
        time.sleep(0.01)
    start = time.time()
    for _ in range(args.steps):
        trainer.train_step(batch)
    sync()
    end = time.time()
    (sync_dir / f"result_{args.block}.json").write_text(json.dumps(
        {"start": start, "end": end, "samples": args.steps * args.batch}))


def concurrent_blocks(blocks: int, batch: int, steps: int, warmup: int) -> dict[str, float]:
    """B block processes training at once on the one GPU: aggregate samples/s."""
    with tempfile.TemporaryDirectory() as sync_dir:
        procs = [subprocess.Popen([sys.executable, __file__, "--worker", "--blocks", str(blocks),
                                   "--block", str(b), "--batch", str(batch), "--steps", str(steps),
                                   "--warmup", str(warmup), "--sync", sync_dir,
                                   *(["--smoke"] if SMOKE else [])])
                 for b in range(blocks)]
        deadline = time.monotonic() + 300
        while None in (codes := [p.poll() for p in procs]):  # every one asked each time
            if any(codes) or time.monotonic() > deadline:  # one failed: stop the others
                for p in procs:
                    p.kill()
                break
            time.sleep(0.2)
        codes = [p.wait() for p in procs]
        if any(codes):
            raise RuntimeError(f"block processes exited with {codes}")
        rows = [json.loads((Path(sync_dir) / f"result_{b}.json").read_text())
                for b in range(blocks)]
    wall = max(r["end"] for r in rows) - min(r["start"] for r in rows)
    return {"blocks": blocks, "batch": batch, "wall_s": wall,
            "aggregate_samples_per_s": sum(r["samples"] for r in rows) / wall}


@torch.no_grad()
def time_sampling(blocks: int, images: int) -> dict[str, float]:
    """Images/s of 50-step Euler sampling (--smoke: 3) with CFG, one block per step."""
    cfg = dit_s(blocks, 128)
    task = ImageGeneration(cfg)
    nets = [task.build_block(b).to(DEVICE).eval() for b in range(blocks)]
    labels = (torch.arange(images) % 10).to(DEVICE)
    task.generate(nets, labels[:16], torch.Generator().manual_seed(0))  # warm-up
    sync()
    start = time.perf_counter()
    task.generate(nets, labels, torch.Generator().manual_seed(1))
    sync()
    seconds = time.perf_counter() - start
    layers = DEPTH // blocks
    return {"blocks": blocks, "steps": cfg.sample.steps, "images": images,
            "layer_evals_per_image": cfg.sample.steps * layers,
            "s_per_image": seconds / images, "images_per_s": images / seconds}


def sweep_blocks(batch: int, steps: int, warmup: int) -> dict:
    """Allocator peak and step time of one block for B = 2..12 against end to end."""
    e2e = time_training(dit_s(1, batch), 0, steps, warmup)
    rows = []
    for blocks in (2, 3, 4, 6, 12):
        block = time_training(dit_s(blocks, batch), 0, steps, warmup)
        rows.append({"blocks": blocks, "batch": batch, "e2e_peak": e2e["peak_allocated_bytes"],
                     "block_peak": block["peak_allocated_bytes"],
                     "peak_ratio": ratio(e2e, block, "peak_allocated_bytes"),
                     "e2e_step_s": e2e["step_time_s"], "block_step_s": block["step_time_s"]})
        print(rows[-1], flush=True)
    name = torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu (smoke)"
    return {"device": name, "model": f"DiT-S/2 {SIZE}x{SIZE} depth {DEPTH}", "rows": rows}


def ratio(a: dict, b: dict, key: str) -> float | None:
    return a[key] / b[key] if b[key] else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="benchmarks/results/gpu.json")
    p.add_argument("--blocks", type=int, default=3)
    for name, (gpu, smoke) in COUNTS.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=None,
                       help=f"default {gpu} (--smoke: {smoke})")
    p.add_argument("--smoke", action="store_true",
                   help="tiny model on the CPU, a few steps (checks the script)")
    p.add_argument("--sweep-blocks", action="store_true",
                   help="only the per-block peak for B = 2..12 at batch 128 (JSON to --out)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--block", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=128, help=argparse.SUPPRESS)
    p.add_argument("--sync", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    for name, (gpu, smoke) in COUNTS.items():
        if getattr(args, name) is None:
            setattr(args, name, smoke if SMOKE else gpu)
    if SMOKE:  # one thread a process, as Ray gives a block actor: on a busy CPU, a tiny
        torch.set_num_threads(1)  # model's step on two threads took 10 times as long
    torch.backends.cuda.matmul.allow_tf32 = True  # TF32 matmuls: the usual fp32 setting on H100
    torch.backends.cudnn.allow_tf32 = True
    if args.worker:
        worker(args)
        return
    if DEVICE == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_bench: no CUDA device (use --smoke to check the script on the CPU)")
    if args.sweep_blocks:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        result = sweep_blocks(128, args.steps, args.warmup)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        return
    B = args.blocks
    name = torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu (smoke)"
    out: dict = {"device": name, "torch": torch.__version__, "provenance": provenance(),
                 "model": "DiT-S/2" if not SMOKE else "tiny", "image_size": SIZE,
                 "depth": DEPTH, "blocks": B,
                 "precision": "fp32 (TF32 matmuls)", "memory": [], "concurrency": [],
                 "sampling": []}

    def save() -> None:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")

    for batch in (128, 256):
        e2e = time_training(dit_s(1, batch), 0, args.steps, args.warmup)
        block = time_training(dit_s(B, batch), 0, args.steps, args.warmup)
        out["memory"].append({"batch": batch, "e2e": e2e, "block": block,
                              "peak_ratio": ratio(e2e, block, "peak_allocated_bytes"),
                              "meter_ratio": ratio(e2e, block, "meter_bytes"),
                              "step_time_ratio": ratio(e2e, block, "step_time_s")})
        save()
    single = time_training(dit_s(B, 128), 0, args.steps, args.warmup)["samples_per_s"]
    for blocks in sorted({2, B}):
        row = concurrent_blocks(blocks, 128, args.steps * 2, args.warmup)
        row["single_block_samples_per_s"] = single
        row["efficiency"] = row["aggregate_samples_per_s"] / (blocks * single)
        out["concurrency"].append(row)
        save()
    for blocks in (1, B):
        out["sampling"].append(time_sampling(blocks, args.sample_images))
        save()
    print_table(out)


def print_table(out: dict) -> None:
    mib = 2**20
    print(f"\n{out['model']} {out['image_size']}x{out['image_size']}, depth {out['depth']}, "
          f"B={out['blocks']}, {out['device']}, torch {out['torch']}, {out['precision']}")
    print(f"{'batch':>5} {'e2e peak MiB':>13} {'block peak MiB':>15} {'ratio':>6} "
          f"{'meter ratio':>12} {'e2e step ms':>12} {'block step ms':>14}")
    for r in out["memory"]:
        print(f"{r['batch']:>5} {r['e2e']['peak_allocated_bytes'] / mib:>13.0f} "
              f"{r['block']['peak_allocated_bytes'] / mib:>15.0f} {r['peak_ratio'] or 0:>6.2f} "
              f"{r['meter_ratio']:>12.2f} {r['e2e']['step_time_s'] * 1e3:>12.1f} "
              f"{r['block']['step_time_s'] * 1e3:>14.1f}")
    print(f"{'blocks at once':>14} {'aggregate samples/s':>20} {'1 block alone':>14} "
          f"{'efficiency':>11}")
    for r in out["concurrency"]:
        print(f"{r['blocks']:>14} {r['aggregate_samples_per_s']:>20.0f} "
              f"{r['single_block_samples_per_s']:>14.0f} {r['efficiency']:>11.2f}")
    print(f"{'sampler':>14} {'layer evals/img':>16} {'images/s':>9} {'ms/image':>9}")
    for r in out["sampling"]:
        name = "end to end" if r["blocks"] == 1 else f"B={r['blocks']} blocks"
        print(f"{name:>14} {r['layer_evals_per_image']:>16} {r['images_per_s']:>9.1f} "
              f"{r['s_per_image'] * 1e3:>9.2f}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
