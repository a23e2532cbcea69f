"""Quality on one GPU in a fixed time: DiffusionBlocks against end to end at equal steps.

The GPU recipes (jobs/vit_fashion.yaml, jobs/dit_fashion.yaml; with ``--tasks mdm ar``
also jobs/mdm_shakespeare.yaml and jobs/ar_shakespeare.yaml) at their full model size, cut
short: every block of DiffusionBlocks and the end-to-end baseline train at the same time, as
separate processes on the one device (``dbparallel train --local --block b``), until they
reach the step count of their setting or ``--train-s`` runs out. Both methods are then
evaluated at the same step K, the last snapshot that every process of the task wrote, so
compute is equal in layer-steps (B blocks x K steps x L/B layers = K x L). DiT's generated
images are saved as .npz; FID and KID need the 87 MB Inception network, scored where it is
(``--score DIR`` on a CPU machine).

    python benchmarks/gpu_quality.py --out DIR [--train-s 280] [--tasks vit dit]
    python benchmarks/gpu_quality.py --score DIR   # adds FID/KID to DIR/gpu_quality.json
    python benchmarks/gpu_quality.py --smoke --out DIR   # the whole flow on CPU, tiny recipes

No Ray; needs omegaconf. Writes ``gpu_quality.json`` (rows as benchmarks/quality_images.py)
after each task, so a cut-off run still leaves what finished.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.provenance import provenance  # noqa: E402
from dbparallel.config import Config, load_config  # noqa: E402
from dbparallel.data.shards import DataIndex  # noqa: E402
from dbparallel.data.sources import open_data  # noqa: E402
from dbparallel.tasks import build_task  # noqa: E402
from dbparallel.training.assemble import assemble  # noqa: E402
from dbparallel.training.checkpoint import BlockCheckpoints  # noqa: E402
from dbparallel.training.data_check import check_data  # noqa: E402
from dbparallel.training.loading import load_run  # noqa: E402
from dbparallel.training.precision import set_matmul_precision  # noqa: E402
from dbparallel.training.storage import Storage  # noqa: E402

COMMON = ["runtime.local=true", "metrics.port=0", "train.assemble_every=0",
          "train.keep_snapshots=1000", "runtime.torch_threads=1"]
GPU = {  # recipe, overrides, steps, checkpoint interval
    "vit": ("jobs/vit_fashion.yaml", ["train.precision=tf32", "train.warmup_steps=500",
                                      "train.ema_decay=0.999"], 4000, 250),
    "dit": ("jobs/dit_fashion.yaml", ["train.precision=tf32", "train.warmup_steps=300",
                                      "train.ema_decay=0.999", "sample.fid=false",
                                      "sample.eval_samples=5000"], 3000, 250),
    "mdm": ("jobs/mdm_shakespeare.yaml", ["train.precision=tf32", "train.warmup_steps=300",
                                          "train.ema_decay=0.999"], 4000, 250),
    "ar": ("jobs/ar_shakespeare.yaml", ["train.precision=tf32", "train.warmup_steps=300",
                                        "train.ema_decay=0.999", "sample.scorer_steps=2000"],
           4000, 250),
}
SMOKE = {
    "vit": ("jobs/vit_tiny.yaml", ["runtime.gpus_per_block=0", "model.depth=6"], 40, 10),
    "dit": ("jobs/dit_fashion_tiny.yaml", ["runtime.gpus_per_block=0", "model.depth=6",
                                           "sample.steps=4", "sample.eval_samples=20",
                                           "sample.fid=false"], 30, 10),
    "mdm": ("jobs/mdm_shakespeare_tiny.yaml", ["sample.steps=8", "sample.eval_samples=16"],
            20, 10),
    "ar": ("jobs/ar_shakespeare_tiny.yaml", ["sample.eval_samples=10", "sample.gen_len=8"],
           20, 10),
}
METHODS = {"diffusionblocks": [], "end_to_end": ["model.blocks=1", "train.objective=end_to_end"]}


def config(recipe: str, overrides: list[str]) -> Config:
    return load_config([ROOT / recipe], overrides)


def launch(recipe: str, overrides: list[str], blocks: int, log_dir: Path,
           name: str) -> list[subprocess.Popen]:
    """One ``train --local --block b`` process per block."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    procs = []
    for b in range(blocks):
        log = open(log_dir / f"{name}-block{b}.log", "w")  # noqa: SIM115 (closed with the run)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "dbparallel", "train", "--local", "--block", str(b),
             str(ROOT / recipe), *overrides], stdout=log, stderr=subprocess.STDOUT, env=env))
    return procs


def common_step(run_dir: Path, blocks: int) -> int:
    """The last step at which every block of a run kept a snapshot (0 if none)."""
    kept = [set(BlockCheckpoints(Storage(str(run_dir)), b).steps("snapshot"))
            for b in range(blocks)]
    shared = set.intersection(*kept) if kept else set()
    return max(shared, default=0)


def evaluate(task: str, cfg: Config, run_dir: Path, step: int, device: str, out: Path,
             index: DataIndex, method: str) -> dict[str, float]:
    """The task's metrics of the run's blocks at ``step`` (held-out rows streamed from
    ``index``); DiT also saves its images."""
    storage = Storage(str(run_dir))
    if task != "dit":
        return assemble(cfg, storage, index, device, write_samples=False, step=step)
    from dbparallel.training.eval.image_generation import eval_samples, score

    network = load_run(str(run_dir), step, device, cfg)
    t, nets = network.task, network.blocks
    fake, labels = eval_samples(cfg, t, nets, device)
    np.savez_compressed(out / f"dit_{method}.npz", labels=labels.numpy(),
                        images=(fake.clamp(0, 1) * 255).round().to(torch.uint8).numpy())
    return score(cfg, t, index, fake, labels, device)


def run_task(task: str, setting: tuple, args: argparse.Namespace,
             work: Path) -> dict[str, Any]:
    """Start every process of ``task``; returns what ``finish_task`` needs."""
    recipe, extra, steps, every = setting
    base = [*extra, *COMMON, f"train.steps={steps}", f"train.checkpoint_every={every}"]
    if args.data_path:
        base.append(f"data.path={args.data_path}")
    dirs = {method: work / f"{task}-{method}" for method in METHODS}
    overrides = {method: [*base, *more, f"run.dir={dirs[method]}", f"run.name={task}-{method}"]
                 for method, more in METHODS.items()}
    cfgs = {method: config(recipe, overrides[method]) for method in METHODS}
    # build the data's cached shards and check its rows once, before the processes (each
    # finds both in the cache); every process and the evaluation stream this index
    index = open_data(cfgs["end_to_end"].data)
    check_data(cfgs["end_to_end"], index, progress=False)
    start = time.monotonic()
    procs = [p for method, cfg in cfgs.items()
             for p in launch(recipe, overrides[method], cfg.model.blocks, work,
                             f"{task}-{method}")]
    return {"task": task, "cfgs": cfgs, "dirs": dirs, "procs": procs, "start": start,
            "recipe": recipe, "base": base, "index": index}


def finish_task(job: dict[str, Any], device: str, out: Path) -> list[dict[str, Any]]:
    """Evaluate both methods of a task at their last common step; the task's result rows."""
    task, cfgs, dirs = job["task"], job["cfgs"], job["dirs"]
    wall = time.monotonic() - job["start"]
    step = min(common_step(dirs[m], cfgs[m].model.blocks) for m in METHODS)
    if step == 0:
        print(f"{task}: no step with a snapshot of every process; nothing to compare")
        return []
    rows = []
    for method, cfg in cfgs.items():
        reached = [max(BlockCheckpoints(Storage(str(dirs[method])), b).steps("snapshot"))
                   for b in range(cfg.model.blocks)]
        t0 = time.monotonic()
        metrics = evaluate(task, cfg, dirs[method], step, device, out, job["index"], method)
        print(f"{task} {method}: step {step} (reached {reached}) "
              + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
              + f" (eval {time.monotonic() - t0:.0f} s)", flush=True)
        for metric, value in metrics.items():
            rows.append({
                "task": task, "method": method, "blocks": cfg.model.blocks, "metric": metric,
                "value": float(value), "train_layer_steps": step * cfg.model.depth,
                "wall_time_s": round(wall, 1), "steps": step, "steps_reached": reached,
                "config": " ".join([job["recipe"], *job["base"], *METHODS[method]]),
            })
    return rows


def train_and_evaluate(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    settings = SMOKE if args.smoke else GPU
    device = "cpu" if args.smoke else "cuda"
    if device == "cuda":
        set_matmul_precision("tf32", device)
    jobs = [run_task(task, settings[task], args, work) for task in args.tasks]
    procs = [p for j in jobs for p in j["procs"]]
    deadline = time.monotonic() + args.train_s
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        time.sleep(2)
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        p.wait()
    result: dict[str, Any] = {"rows": [], "device": device_name(device),
                              "provenance": provenance(),
                              "train_s_limit": args.train_s, "exit_codes": [p.returncode
                                                                            for p in procs]}
    for job in jobs:
        try:
            result["rows"] += finish_task(job, device, out)
        except Exception as err:  # one task's failure must not lose the others' rows
            print(f"{job['task']}: evaluation failed: {err!r}", flush=True)
        (out / "gpu_quality.json").write_text(json.dumps(result, indent=2) + "\n")


def device_name(device: str) -> str:
    return torch.cuda.get_device_name() if device == "cuda" else "cpu"


def score_fid(directory: Path, data_path: str) -> None:
    """Add FID and KID of the saved DiT images to ``directory/gpu_quality.json`` (on CPU),
    against the held-out rows a run's own scoring compares them with (``fid_reference_rows``)."""
    from dbparallel.data.split_reader import take_rows
    from dbparallel.training.eval.image_generation import images_of
    from dbparallel.training.eval.inception import fid_kid, fid_reference_rows

    path = directory / "gpu_quality.json"
    result = json.loads(path.read_text())
    cfg = config("jobs/dit_fashion.yaml", [*COMMON, *([f"data.path={data_path}"]
                                                      if data_path else [])])
    index, t = open_data(cfg.data), build_task(cfg)
    split = index.eval_split
    scored = ("fid", "kid", "kid_std", "fid_samples")
    result["rows"] = [r for r in result["rows"] if r["metric"] not in scored]
    for method in METHODS:
        npz = directory / f"dit_{method}.npz"
        if not npz.is_file():
            continue
        fake = torch.from_numpy(np.load(npz)["images"]).float() / 255
        pick = fid_reference_rows(index.num_rows(split), len(fake), cfg.run.seed)
        real, _ = images_of(t, take_rows(index, split, pick.numpy(), t.columns))
        metrics = fid_kid(real, fake, cfg.run.seed, "cpu")
        like = next(r for r in result["rows"] if r["task"] == "dit" and r["method"] == method)
        for metric, value in metrics.items():
            result["rows"].append({**like, "metric": metric, "value": float(value),
                                   "scored_on": "cpu", "samples": len(fake)})
        print(f"dit {method}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    path.write_text(json.dumps(result, indent=2) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="benchmarks/results/gpu_quality")
    p.add_argument("--work", default="/tmp/dbparallel-gpu-quality", help="run directories")
    p.add_argument("--train-s", type=float, default=280.0, help="training time limit, seconds")
    p.add_argument("--tasks", nargs="+", default=["vit", "dit"], choices=sorted(GPU),
                   help="vit and dit by default; the looped model has no blocks to compare")
    p.add_argument("--data-path", default="", help="Fashion-MNIST IDX directory (data.path)")
    p.add_argument("--smoke", action="store_true", help="tiny recipes on CPU (checks the flow)")
    p.add_argument("--score", default="", metavar="DIR", help="add FID/KID to DIR's results")
    args = p.parse_args()
    if args.score:
        score_fid(Path(args.score), args.data_path)
    else:
        train_and_evaluate(args)


if __name__ == "__main__":
    main()
