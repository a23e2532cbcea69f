"""`dbparallel plan`: the partition and per-block sizes of a config, without training; how
the blocks fill a cluster (blocks at once, waves, memory per device); ``model.blocks=auto``."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from typing import Any

import torch

from dbparallel.config import Config, ConfigError, bytes_text
from dbparallel.core.meta_memory import LiveSavedBytes, cpu_attention_on_meta
from dbparallel.tasks import build_task
from dbparallel.training.flops import FlopCount
from dbparallel.training.peaks import peak_tflops
from dbparallel.training.step_pieces import planned_draws

ASSUMED_MFU = 0.4  # the plan's step-rate estimate: a guess until gpu.sh measures MFU
ADAM_COPIES = 4  # parameters, gradients and Adam's two moments (paper App. G: 4P)


def step_bytes(cfg: Config, block: int = 0, device: str = "meta",
               context: AbstractContextManager | None = None) -> dict[str, int]:
    """Bytes of one training step of ``block``, from shapes alone on the meta device (or a
    real step on ``device``): 4P for parameters, gradients and Adam, and the peak bytes saved
    for backward through forward and backward, with the block's private stem and head apart.
    ``context`` wraps the step. With train.checkpoint_layers, the peak comes in backward,
    ``flops`` are the model's (``model_flops_per_step``) and ``work_flops`` what the device
    computes (the layers' forward pass twice). With
    runtime.replicas_per_block=R, one replica's step: its share of the batch (the most rows);
    with train.micro_batches=k, the activations of its largest piece and the FLOPs of all."""
    task = build_task(cfg)
    with torch.device(device):
        net = task.build_block(block)
    net.checkpoint_layers(cfg.train.checkpoint_layers)
    split = net.parameter_split()
    size = next(net.parameters()).element_size()
    rows = -(-cfg.train.batch_size // cfg.runtime.replicas_per_block)
    piece = -(-rows // cfg.train.micro_batches)
    batch = task.example_batch(piece, device)
    meter = LiveSavedBytes(exclude=list(net.parameters()))
    count = FlopCount()
    with ExitStack() as stack:
        stack.enter_context(cpu_attention_on_meta())
        if context is not None:
            stack.enter_context(context)
        with meter.record(), count.counting():
            task.loss_on(net, batch, block,
                         planned_draws(task, block, batch, device, cfg.run.seed)
                         ).mean().backward()
    params = ADAM_COPIES * split["total"] * size
    stem = ADAM_COPIES * split["stem_and_head"] * size
    # per row but for a few ops per call (the AR masks): k pieces count a little more than
    # rows/piece times one (AR, 3 pieces: 0.07% more than this count)
    work = count.total * rows // piece  # what the device computes, recomputation included
    flops = model_flops_per_step(cfg, block) if cfg.train.checkpoint_layers else work
    return {"params_and_optimizer": params, "activations": meter.peak,
            "total": params + meter.peak, "stem_and_head": stem, "flops": flops,
            "work_flops": work}


def model_flops_per_step(cfg: Config, block: int = 0) -> int:
    """The model FLOPs of one step of ``block`` (this process's rows, every piece), counted
    from shapes on the meta device without train.checkpoint_layers: the layers' second
    forward pass in backward is work the hardware does, not the model (MFU leaves it out)."""
    plain = copy.deepcopy(cfg)
    plain.train.checkpoint_layers = False
    return step_bytes(plain, block)["flops"]


def plan(cfg: Config, cluster: Cluster | None = None) -> dict[str, Any]:
    """The plan as JSON-ready data (the shape of `dbparallel plan --json`); with ``cluster``,
    also how the blocks fill it (``cluster_plan``)."""
    task = build_task(cfg)
    p = task.partition
    nominal = [p.nominal_range(b) for b in range(p.blocks)]
    params = []
    for b in range(p.blocks):
        with torch.device("meta"):
            params.append(sum(x.numel() for x in task.build_block(b).parameters()))
    steps = [step_bytes(cfg, b) for b in range(p.blocks)]
    memory, flops = [s["total"] for s in steps], [s["flops"] for s in steps]
    work = [s["work_flops"] for s in steps]  # the step rate: checkpointed layers run twice
    return {
        **({"cluster": cluster_plan(cfg, cluster, memory, work)} if cluster else {}),
        "blocks": p.blocks,
        "sigma_boundaries": list(p.boundaries),
        "ranges": [list(r) for r in p.ranges],
        "nominal_ranges": [list(r) for r in nominal],
        "mass": [task.noise.mass(lo, hi) for lo, hi in nominal],
        "layers_per_block": cfg.model.layers_per_block,
        "params_per_block": params,
        "estimated_memory_bytes": memory,
        "model_flops_per_step": flops,
    }


def plan_table(cfg: Config, result: dict[str, Any]) -> str:
    """A human-readable table of ``plan(cfg)``."""
    lines = [f"task {cfg.task}: {result['blocks']} blocks x {result['layers_per_block']} layers "
             f"(depth {cfg.model.depth}), overlap gamma={cfg.noise.gamma}",
             f"{'block':>5} {'t range' if cfg.task == 'mdm' else 'sigma range':>22} "
             f"{'with overlap':>22} {'mass':>6} "
             f"{'params':>11} {'train memory':>13}"]
    for b in range(result["blocks"]):
        lo, hi = result["nominal_ranges"][b]
        wlo, whi = result["ranges"][b]
        lines.append(
            f"{b:>5} {f'[{lo:.4g}, {hi:.4g}]':>22} {f'[{wlo:.4g}, {whi:.4g}]':>22} "
            f"{result['mass'][b]:>6.3f} {result['params_per_block'][b]:>11,} "
            f"{result['estimated_memory_bytes'][b] / 2**20:>9.1f} MiB")
    R, batch, k = cfg.runtime.replicas_per_block, cfg.train.batch_size, cfg.train.micro_batches
    share = -(-batch // R)
    rows = (f"one replica's {share} rows of train.batch_size={batch} "
            f"(runtime.replicas_per_block={R})" if R > 1 else f"train.batch_size={batch}")
    if k > 1:
        rows += f", in pieces of {-(-share // k)} rows (train.micro_batches={k})"
    if cfg.train.checkpoint_layers:
        rows += ", with activation checkpointing of every layer (train.checkpoint_layers)"
    lines.append("block 0 runs first at inference (highest noise); memory is one training step "
                 f"(parameters, gradients, Adam, activations) at {rows}")
    if "cluster" in result:
        lines += cluster_lines(cfg, result["cluster"])
    return "\n".join(lines)



def cluster_lines(cfg: Config, c: dict[str, Any]) -> list[str]:
    """The cluster part of the plan table."""
    r, blocks = cfg.runtime, cfg.model.blocks
    unit = (f"{r.gpus_per_block:g} GPU + {r.cpus_per_block:g} CPU" if r.gpus_per_block
            else f"{r.cpus_per_block:g} CPU")
    have = (f"{c['gpus']:g} GPUs, {c['cpus']:g} CPUs" if c["cpus"] is not None
            else f"{c['gpus']:g} GPUs")
    assembler = " + ".join(f"{v:g} {k}" for k, v in (("GPU", r.assembly_gpus),
                                                       ("CPU", r.assembly_cpus)) if v)
    slots, waves = c["concurrent_blocks"], c["waves"]
    if r.replicas_per_block > 1:
        unit = f"{r.replicas_per_block} x ({unit})"
    lines = [f"cluster ({c['source']}): {have}; each block {unit}"
             + (f", the assembly actor {assembler}" if assembler else ""),
             f"  {slots} of {blocks} blocks at once: {waves} wave(s); "
             f"{c['replicas_per_block']} replica(s) per block"]
    memory = f"  memory per device: {bytes_text(c['memory_per_device_bytes'])}"
    if r.gpus_per_block:
        memory += f" ({c['blocks_per_device']} block(s) per GPU)"
    if c["device_memory_bytes"]:
        verdict = "fits" if c["fits"] else ("does NOT fit: more blocks, more replicas, "
                                             "train.micro_batches or a smaller batch")
        memory += f" of {bytes_text(c['device_memory_bytes'])} ({verdict})"
    lines.append(memory)
    if not c["room"]:
        beside = " beside the assembly actor" if assembler else ""
        keys = "runtime.cpus_per_block/gpus_per_block" + (
            "/assembly_cpus/assembly_gpus" if assembler else "")
        lines.append(f"  does NOT fit: one block ({unit}){beside} is more than the cluster "
                     f"has; lower {keys}, or add nodes"
                     + ("; a run on it asks for every block and waits up to "
                        "runtime.placement_timeout_s for nodes to join"
                        if c["source"] == "detected" and not r.max_concurrent_blocks else ""))
    rates = c.get("estimated_steps_per_s")
    if rates:
        span = (f"{min(rates):.3g}" if f"{min(rates):.3g}" == f"{max(rates):.3g}"
                else f"{min(rates):.3g} to {max(rates):.3g}")
        lines.append(f"  estimated step rate per block: {span} steps/s, at an assumed "
                     f"{c['assumed_mfu']:.0%} MFU of {c['device_name']}'s {c['peak_tflops']:g} "
                     f"TFLOP/s ({cfg.train.precision}); not a measurement")
    elif r.gpus_per_block:
        lines.append("  no step-rate estimate: name the GPU model with runtime.device_name "
                     "(e.g. H100)")
    if waves > 1 and c["room"]:
        lines.append(f"  blocks {slots}..{blocks - 1} queue and each starts when a block "
                     f"finishes (runtime.max_concurrent_blocks sets how many run at once)")
    fill = replicas_to_fill(cfg, c["gpus"])
    if fill > r.replicas_per_block:
        used = blocks * r.replicas_per_block * r.gpus_per_block
        lines.append(f"  {c['gpus'] - r.assembly_gpus - used:g} GPUs stay idle: "
                     f"runtime.replicas_per_block={fill} would give each block {fill} "
                     f"data-parallel workers")
    return lines


def replicas_to_fill(cfg: Config, gpus: float) -> int:
    """The most replicas per block with which every block trains at once on ``gpus`` GPUs
    (0: not a GPU plan)."""
    r = cfg.runtime
    if not r.gpus_per_block or not math.isfinite(gpus):
        return 0
    return math.floor((gpus - r.assembly_gpus) / (cfg.model.blocks * r.gpus_per_block) + 1e-9)


@dataclass(frozen=True)
class Cluster:
    """What a plan places blocks on: CPUs and GPUs in all, and where that was learned."""

    cpus: float
    gpus: float
    source: str  # "detected" (a running cluster), "runtime.devices", "this machine"
    device_name: str = ""  # the GPUs' model (H100, ...): the step-rate estimate's peak


def concurrent_blocks(cfg: Config, cluster: Cluster) -> int:
    """Blocks that train at once: runtime.max_concurrent_blocks, else as many as the cluster
    fits beside the assembly actor (at least 1, at most every block); a block takes
    runtime.cpus_per_block and gpus_per_block for each of its runtime.replicas_per_block."""
    r, blocks = cfg.runtime, cfg.model.blocks
    if r.max_concurrent_blocks:
        return min(blocks, r.max_concurrent_blocks)
    if not room(cfg, cluster) and cluster.source == "detected":
        # a joined cluster with no room for one block yet: its nodes are still starting, or
        # an autoscaler has yet to add them; asking for every block tells it what to add
        return blocks
    return max(1, room(cfg, cluster))


def room(cfg: Config, cluster: Cluster) -> int:
    """Blocks the cluster fits at once beside the assembly actor, at most every block (0: not
    even one)."""
    r, fits = cfg.runtime, [cfg.model.blocks]
    R = r.replicas_per_block
    for have, asked, each in ((cluster.cpus, r.assembly_cpus, R * r.cpus_per_block),
                              (cluster.gpus, r.assembly_gpus, R * r.gpus_per_block)):
        if math.isfinite(have) and (each or asked):
            fits.append(math.floor((have - asked) / each + 1e-9) if each else
                        (cfg.model.blocks if asked <= have + 1e-9 else 0))
    return max(0, min(fits))


def cluster_plan(cfg: Config, cluster: Cluster, block_bytes: list[int],
                 block_flops: list[int] | None = None) -> dict[str, Any]:
    """Blocks at once, waves, and the training memory each device holds (blocks that share a
    GPU, runtime.gpus_per_block < 1, add up) against runtime.device_memory; where the GPU's
    peak is known, each block's step rate at an assumed ASSUMED_MFU (an estimate)."""
    r = cfg.runtime
    slots = concurrent_blocks(cfg, cluster)
    sharing = max(1, math.floor(1 / r.gpus_per_block + 1e-9)) if r.gpus_per_block else 1
    per_device = max(block_bytes) * min(sharing, slots)
    limit = r.device_memory_bytes
    cpus = cluster.cpus if math.isfinite(cluster.cpus) else None  # JSON has no infinity
    return {"cpus": cpus, "gpus": cluster.gpus, "source": cluster.source,
            "concurrent_blocks": slots, "waves": math.ceil(cfg.model.blocks / slots),
            "replicas_per_block": r.replicas_per_block, "blocks_per_device": min(sharing, slots),
            "memory_per_device_bytes": per_device, "device_memory_bytes": limit or None,
            "fits": None if not limit else per_device <= limit,
            "room": room(cfg, cluster),
            **_rate(cfg, cluster, block_flops or [])}


def _rate(cfg: Config, cluster: Cluster, flops: list[int]) -> dict[str, Any]:
    """Estimated steps/s per block from the step's model FLOPs and the GPU's dense peak at
    train.precision (a share of runtime.gpus_per_block of it) at ASSUMED_MFU."""
    gpus = cfg.runtime.gpus_per_block
    peak = peak_tflops(cluster.device_name, cfg.train.precision) if cluster.device_name else None
    if not (peak and gpus and flops and all(flops)):
        return {"estimated_steps_per_s": None}
    share = peak * 1e12 * ASSUMED_MFU * min(gpus, 1.0)
    return {"device_name": cluster.device_name, "peak_tflops": peak, "assumed_mfu": ASSUMED_MFU,
            "estimated_steps_per_s": [share / f for f in flops]}


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def block_memory(cfg: Config) -> list[int]:
    """Training bytes of one step of every block (the plan's byte meter)."""
    return [step_bytes(cfg, b)["total"] for b in range(cfg.model.blocks)]


def fit_blocks(build: Callable[[int], Config]) -> int:
    """``model.blocks=auto``: the smallest B (a divisor of model.depth) whose every block
    trains within runtime.device_memory; ConfigError naming the keys when none does."""
    base = build(1)
    limit = base.runtime.device_memory_bytes
    if not limit:
        raise ConfigError("model.blocks=auto: set runtime.device_memory (e.g. 80GiB), the "
                          "memory one block may use")
    smallest = None
    for blocks in divisors(base.model.depth):
        try:
            cfg = build(blocks)
        except ConfigError:  # a B the task does not allow
            continue
        need = max(block_memory(cfg))
        if need <= limit:
            return blocks
        smallest = (blocks, need)
    detail = (f"; even B={smallest[0]} needs {smallest[1] / 2**30:.2f} GiB per block"
              if smallest else "")
    raise ConfigError(f"model.blocks=auto: no B that divides model.depth={base.model.depth} "
                      f"trains within runtime.device_memory={base.runtime.device_memory}"
                      f"{detail}; raise train.micro_batches, lower train.batch_size or use a "
                      f"smaller model")
