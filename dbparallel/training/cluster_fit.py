"""How a plan's blocks fill a cluster: blocks at once, waves, memory per device against
``runtime.device_memory``, and an estimated step rate where the GPU model is known."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from dbparallel.config import Config, bytes_text
from dbparallel.training.peaks import PEAK_LABELS, peak_label, peak_tflops

ASSUMED_MFU = 0.4  # the plan's step-rate estimate: a guess until gpu.sh measures MFU
# The share of runtime.device_memory a plan fills (model.blocks=auto, "fits"). The plan counts
# tensors (parameters, gradients, Adam, the EMA, activations, inputs, draws); the rest is left
# for what it does not: the allocator's rounding and cuBLAS workspaces (an H100 DiT-S/2 block
# peaked 5% above the count, docs/performance.md), the CUDA context and its libraries.
USABLE = 0.9


def counted(n: float, noun: str) -> str:
    """``1 GPU``, ``8 GPUs``, ``0.5 GPUs``: ``n`` of ``noun``, plural but for one."""
    return f"{n:g} {noun}{'s' * (n != 1)}"


def cluster_lines(cfg: Config, c: dict[str, Any]) -> list[str]:
    """The cluster part of the plan table."""
    r, blocks = cfg.runtime, cfg.model.blocks
    unit = (f"{r.gpus_per_block:g} GPU + {r.cpus_per_block:g} CPU" if r.gpus_per_block
            else f"{r.cpus_per_block:g} CPU")
    have = counted(c["gpus"], "GPU") + (f", {counted(c['cpus'], 'CPU')}"
                                        if c["cpus"] is not None else "")
    assembler = " + ".join(f"{v:g} {k}" for k, v in (("GPU", r.assembly_gpus),
                                                       ("CPU", r.assembly_cpus)) if v)
    slots, waves = c["concurrent_blocks"], c["waves"]
    if r.replicas_per_block > 1:
        unit = f"{r.replicas_per_block} x ({unit})"
    lines = [f"cluster ({c.get('joined') or c['source']}): {have}; each block {unit}"
             + (f", the assembly actor {assembler}" if assembler else ""),
             f"  {slots} of {counted(blocks, 'block')} at once: {counted(waves, 'wave')}; "
             f"{counted(c['replicas_per_block'], 'replica')} per block"]
    memory = f"  memory per device: {bytes_text(c['memory_per_device_bytes'])}"
    if r.gpus_per_block:
        memory += f" ({counted(c['blocks_per_device'], 'block')} per GPU)"
    if c["device_memory_bytes"]:
        verdict = "fits" if c["fits"] else f"does NOT fit: {_remedies(cfg, c)}"
        memory += (f" of {bytes_text(c['device_memory_bytes'])} ({verdict}; a plan fills "
                   f"{USABLE:.0%} of it)")
    lines.append(memory)
    if r.gpus_per_block > 1:
        lines.append(f"  runtime.gpus_per_block={r.gpus_per_block:g}: a block (each replica) "
                     f"trains on one GPU, the other {r.gpus_per_block - 1:g} it reserves stay "
                     f"idle (no model parallelism); for memory raise model.blocks or set "
                     f"train.checkpoint_layers=true, for speed raise runtime.replicas_per_block")
    if c["gpus"] and not r.gpus_per_block:
        unused = "the GPU is" if c["gpus"] == 1 else f"none of the {c['gpus']:g} GPUs is"
        lines.append(f"  runtime.gpus_per_block=0: the blocks train on CPUs and {unused} "
                     f"used; set runtime.gpus_per_block=1 to give each block a GPU")
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
                     f"{c['assumed_mfu']:.0%} MFU of {c['peak_row']}'s {c['peak_tflops']:g} "
                     f"TFLOP/s ({cfg.train.precision}); not a measurement")
        lines.append(f"  estimated training time: {_time(c['estimated_train_s'])} for "
                     f"train.steps in {counted(waves, 'wave')} at those rates (steps only: "
                     f"data waits, checkpoints and assemblies add to it)")
    elif r.gpus_per_block and c.get("device_name"):
        named = (f"runtime.device_name={r.device_name!r}" if r.device_name
                 else f"this machine's GPU {c['device_name']!r}")
        lines.append(f"  no step-rate estimate: {named} has no known dense peak (known: "
                     f"{', '.join(PEAK_LABELS)}); name one of those with runtime.device_name, "
                     f"or leave the estimate out")
    elif r.gpus_per_block:
        lines.append("  no step-rate estimate: name the GPU model with runtime.device_name "
                     "(e.g. H100)")
    hand = r.max_concurrent_blocks
    if hand and 0 < c["room"] < slots:
        lines.append(f"  runtime.max_concurrent_blocks={hand} asks for {slots} blocks at once, "
                     f"but the cluster has room for {c['room']}: a run waits "
                     f"runtime.placement_timeout_s for nodes to join, then fails; set it to "
                     f"{c['room']} or less, or 0 (what the cluster has room for)")
    if waves > 1 and c["room"]:
        queued = (f"block {slots} queues and starts" if slots == blocks - 1 else
                  f"blocks {slots}..{blocks - 1} queue and each starts")
        lines.append(f"  {queued} when a block finishes (runtime.max_concurrent_blocks sets "
                     f"how many run at once)")
    fill = replicas_to_fill(cfg, c["gpus"])
    idle = c["gpus"] - r.assembly_gpus - min(slots, c["room"]) * r.replicas_per_block * (
        r.gpus_per_block)
    idle_gpus = f"{counted(idle, 'GPU')} stay{'s' * (idle == 1)} idle"
    if hand and slots < min(blocks, c["room"]) and r.gpus_per_block and idle > 0:
        lines.append(f"  {idle_gpus}: runtime.max_concurrent_blocks={hand} trains "
                     f"fewer blocks at once than the cluster has room for "
                     f"({min(blocks, c['room'])}); 0 trains that many")
    elif fill > r.replicas_per_block:
        lines.append(f"  {idle_gpus}: runtime.replicas_per_block={fill} would give "
                     f"each block {fill} data-parallel workers")
    return lines


def _time(seconds: float) -> str:
    """``24 s``, ``45 min``, ``3.5 h``, ``120 h``."""
    hours = seconds / 3600
    if round(seconds) < 60:  # a short run's estimate, not "0 min"
        return f"{round(seconds)} s"
    return (f"{seconds / 60:.0f} min" if hours < 1 else f"{hours:.1f} h" if hours < 10
            else f"{hours:,.0f} h")


def _remedies(cfg: Config, c: dict[str, Any]) -> str:
    """The keys that shrink what a device holds, those that can still change first."""
    r, t = cfg.runtime, cfg.train
    raise_keys = []
    if cfg.model.blocks < cfg.model.depth and cfg.task != "looped":
        raise_keys.append("model.blocks (model.blocks=auto picks the smallest that fits)")
    if -(-t.batch_size // r.replicas_per_block) > t.micro_batches:  # a piece has rows to cut
        raise_keys += ["runtime.replicas_per_block", "train.micro_batches"]
    if c["blocks_per_device"] > 1:
        raise_keys.append("runtime.gpus_per_block (fewer blocks share a GPU)")
    ways = [] if t.checkpoint_layers else ["set train.checkpoint_layers=true"]
    if raise_keys:
        ways.append("raise " + (" or ".join(raise_keys) if len(raise_keys) < 3 else
                                ", ".join(raise_keys[:-1]) + " or " + raise_keys[-1]))
    return ", ".join(ways + ["lower train.batch_size or use a smaller model"])


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
    joined: str = ""  # a detected cluster's address, as given ("RAY_ADDRESS=head:6379")


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
    GPU, runtime.gpus_per_block < 1, add up) against USABLE of runtime.device_memory; where
    the GPU's peak is known, each block's step rate at an assumed ASSUMED_MFU (an
    estimate)."""
    r = cfg.runtime
    slots = concurrent_blocks(cfg, cluster)
    sharing = max(1, math.floor(1 / r.gpus_per_block + 1e-9)) if r.gpus_per_block else 1
    per_device = max(block_bytes) * min(sharing, slots)
    limit = r.device_memory_bytes
    cpus = cluster.cpus if math.isfinite(cluster.cpus) else None  # JSON has no infinity
    return {"cpus": cpus, "gpus": cluster.gpus, "source": cluster.source,
            "joined": cluster.joined or None,
            "concurrent_blocks": slots, "waves": math.ceil(cfg.model.blocks / slots),
            "replicas_per_block": r.replicas_per_block, "blocks_per_device": min(sharing, slots),
            "memory_per_device_bytes": per_device, "device_memory_bytes": limit or None,
            "fits": None if not limit else per_device <= USABLE * limit,
            "room": room(cfg, cluster),
            **_rate(cfg, cluster, block_flops or [], slots)}


def _rate(cfg: Config, cluster: Cluster, flops: list[int], slots: int) -> dict[str, Any]:
    """Estimated steps/s per block from the step's model FLOPs and the GPU's dense peak at
    train.precision (a share of runtime.gpus_per_block of it) at ASSUMED_MFU, and the
    seconds of training that gives: ``slots`` blocks at once, each wave as long as its
    slowest block (steps only)."""
    gpus = cfg.runtime.gpus_per_block
    peak = peak_tflops(cluster.device_name, cfg.train.precision) if cluster.device_name else None
    if not (peak and gpus and flops and all(flops)):
        return {"device_name": cluster.device_name or None, "estimated_steps_per_s": None}
    share = peak * 1e12 * ASSUMED_MFU * min(gpus, 1.0)
    rates = [share / f for f in flops]
    seconds = [cfg.train.steps_of(b) / rate for b, rate in enumerate(rates)]
    return {"device_name": cluster.device_name, "peak_row": peak_label(cluster.device_name),
            "peak_tflops": peak, "assumed_mfu": ASSUMED_MFU, "estimated_steps_per_s": rates,
            "estimated_train_s": sum(max(seconds[w:w + max(1, slots)])
                                     for w in range(0, len(seconds), max(1, slots)))}
