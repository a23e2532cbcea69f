"""`dbparallel plan`: the partition and per-block sizes of a config, without training; how
the blocks fill a cluster (blocks at once, waves, memory per device); ``model.blocks=auto``."""

from __future__ import annotations

import copy
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import asdict
from typing import Any

import torch

from dbparallel.config import Config, ConfigError, bytes_text
from dbparallel.core.meta_autocast import cuda_autocast_on_meta
from dbparallel.core.meta_memory import LiveSavedBytes, LiveTensorBytes, cpu_attention_on_meta
from dbparallel.tasks import build_task
from dbparallel.training.cluster_fit import (
    USABLE,
    Cluster,
    cluster_lines,
    cluster_plan,
    counted,
)
from dbparallel.training.data_memory import rows_nbytes
from dbparallel.training.flops import FlopCount
from dbparallel.training.precision import autocast
from dbparallel.training.step_pieces import planned_draws

ADAM_COPIES = 4  # parameters, gradients and Adam's two moments (paper App. G: 4P)


def step_bytes(cfg: Config, block: int = 0, device: str = "meta",
               context: AbstractContextManager | None = None,
               count_flops: bool = True) -> dict[str, int]:
    """Bytes of one training step of ``block``, from shapes alone on the meta device (or a
    real step on ``device``): 4P for parameters, gradients and Adam (``params_and_optimizer``),
    P for the weights' moving average every block keeps for assembly (``ema``), the peak bytes
    saved for backward through forward and backward (``activations``), the
    step's input rows on the device (``inputs``) and the loss's noise draws (``draws``: a
    piece's, alive through its forward pass; ``draws_at_cut``: the global batch's draws and a
    piece's copy of its rows, held for a moment before its forward pass when the batch is cut
    into replicas' shares or pieces), with the block's private stem and head apart. ``total``
    is 5P, the inputs, and the larger of activations + working + draws and ``draws_at_cut``.
    ``working``: what the step's other intermediates hold beside the saved bytes at their
    peak (the activations' gradients in backward, a checkpointed layer's recomputed outputs,
    the loss's own tensors, a later piece's new parameter gradient), counted like an
    allocator (``LiveTensorBytes``). ``context`` wraps the step. With
    train.checkpoint_layers, the peak comes in backward, ``flops`` are the model's
    (``model_flops_per_step``) and ``work_flops`` what the device computes (the layers'
    forward pass twice). With
    runtime.replicas_per_block=R, one replica's step: its share of the batch (the most rows);
    with train.micro_batches=k, the activations of its largest piece and the FLOPs of all.
    ``count_flops=False`` leaves the FLOPs out (no ``flops``, ``work_flops``): counting them
    op by op is most of the time a memory estimate takes. On the meta device a step is
    counted once for blocks alike (``_alike``): the blocks of most configs are."""
    task = build_task(cfg, shapes_only=device == "meta")
    with torch.device(device):
        net = task.build_block(block)
    net.checkpoint_layers(cfg.train.checkpoint_layers)
    split = net.parameter_split()
    size = next(net.parameters()).element_size()
    rows = -(-cfg.train.batch_size // cfg.runtime.replicas_per_block)
    piece = -(-rows // cfg.train.micro_batches)
    batch = task.example_batch(piece, device)
    draws = planned_draws(task, block, batch, device, cfg.run.seed)
    key = _alike(cfg, net, batch, draws, count_flops) if device == "meta" and \
        context is None else None
    if key in _COUNTED:
        return dict(_COUNTED[key])
    meter = LiveSavedBytes(exclude=list(net.parameters()))
    live = LiveTensorBytes()
    count = FlopCount()
    with ExitStack() as stack:
        stack.enter_context(cpu_attention_on_meta())
        if context is not None:
            stack.enter_context(context)
        stack.enter_context(meter.record())
        if count_flops:
            stack.enter_context(count.counting())
        stack.enter_context(live)
        if device == "meta":  # CUDA's autocast lists, switched on by CPU autocast's flag
            stack.enter_context(cuda_autocast_on_meta())
        # the forward pass under train.precision, as BlockTrainer._loss runs it
        with autocast(cfg.train.precision, "cpu" if device == "meta" else device):
            per_sample = task.loss_on(net, batch, block, draws).float()
        per_sample.mean().backward()
    # what the step's operations hold beside the saved bytes and 4P at their peak (the
    # gradients of the activations, recomputed layers, the loss's intermediates). One piece
    # makes the parameters' gradients as it goes (they are in 4P, and a peak may come before
    # all are made); a later piece finds them all there, makes each anew and adds it in.
    sizes = [p.numel() * p.element_size() for p in net.parameters()]
    if piece < rows:
        working = max(0, live.peak() + max(sizes) - meter.peak)
    else:
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        working = max(0, live.peak(grads) - sum(sizes) - meter.peak)
    params = ADAM_COPIES * split["total"] * size
    ema = split["total"] * size  # BlockTrainer.ema: a copy of the weights, on the device
    stem = ADAM_COPIES * split["stem_and_head"] * size
    inputs = rows_nbytes(task.example_batch(rows, device))
    drawn = rows_nbytes(draws)
    at_cut = 0 if piece == cfg.train.batch_size else drawn + rows_nbytes(planned_draws(
        task, block, task.example_batch(cfg.train.batch_size, "meta"), "meta", cfg.run.seed))
    out = {"params_and_optimizer": params, "ema": ema, "activations": meter.peak,
           "working": working, "inputs": inputs, "draws": drawn, "draws_at_cut": at_cut,
           "total": params + ema + inputs + max(meter.peak + working + drawn, at_cut),
           "stem_and_head": stem}
    if count_flops:
        # per row but for a few ops per call (the AR masks): k pieces count a little more
        # than rows/piece times one (AR, 3 pieces: 0.07% more than this count)
        work = count.total * rows // piece  # what the device computes, recomputation included
        flops = model_flops_per_step(cfg, block) if cfg.train.checkpoint_layers else work
        out = {**out, "flops": flops, "work_flops": work}
    if key is not None:
        if len(_COUNTED) >= _MOST_COUNTED:
            _COUNTED.pop(next(iter(_COUNTED)))
        _COUNTED[key] = dict(out)
    return out


_COUNTED: dict[str, dict[str, int]] = {}  # step_bytes of a step on meta, by ``_alike``
_MOST_COUNTED = 256


def _alike(cfg: Config, net: torch.nn.Module, batch: dict[str, torch.Tensor],
           draws: dict[str, torch.Tensor], count_flops: bool) -> str:
    """What makes two meta steps count the same: the config, the block's network (its
    modules, parameters and buffers) and the shapes of its batch and draws. A task's loss
    depends on its block only through these (Task.loss_on), so blocks alike (all of a config
    whose layers divide evenly, as they must) are counted once: a plan of B blocks, and
    model.blocks=auto's search over B, run one meta step per config instead of one per
    block, which on a large network is seconds each."""
    def shapes(tensors: Any) -> list[tuple[str, tuple[int, ...], str, bool]]:
        return [(k, tuple(v.shape), str(v.dtype), v.requires_grad) for k, v in tensors]

    return repr((asdict(cfg), repr(net), shapes(net.named_parameters()),
                 shapes(net.named_buffers()), shapes(sorted(batch.items())),
                 shapes(sorted(draws.items())), count_flops))


def model_flops_per_step(cfg: Config, block: int = 0) -> int:
    """The model FLOPs of one step of ``block`` (this process's rows, every piece), counted
    from shapes on the meta device without train.checkpoint_layers: the layers' second
    forward pass in backward is work the hardware does, not the model (MFU leaves it out)."""
    plain = copy.deepcopy(cfg)
    plain.train.checkpoint_layers = False
    return step_bytes(plain, block)["flops"]


PARTS = ("params_and_optimizer", "ema", "activations", "working", "inputs", "draws")


def plan(cfg: Config, cluster: Cluster | None = None) -> dict[str, Any]:
    """The plan as JSON-ready data (the shape of `dbparallel plan --json`); with ``cluster``,
    also how the blocks fill it (``cluster_plan``)."""
    task = build_task(cfg, shapes_only=True)
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
        # what each block's step holds: only more blocks shrink the first two; activations
        # shrink with them too, and with train.checkpoint_layers, micro_batches and replicas
        "memory_parts": [{k: s[k] for k in PARTS} for s in steps],
        "model_flops_per_step": flops,
    }


def plan_table(cfg: Config, result: dict[str, Any]) -> str:
    """A human-readable table of ``plan(cfg)``."""
    lines = [f"task {cfg.task}: {counted(result['blocks'], 'block')} x "
             f"{counted(result['layers_per_block'], 'layer')} "
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
    if cfg.train.precision == "bf16":
        rows += ("; activations counted under CUDA's bf16 autocast (train.precision=bf16: "
                 "bfloat16 matmuls and attention, float32 norms, softmax and losses)")
    lines.append("block 0 runs first at inference (highest noise); memory is one training step "
                 f"(parameters, gradients, Adam, the EMA, activations, inputs, noise draws) "
                 f"at {rows}")
    memory = result["estimated_memory_bytes"]
    worst = max(range(len(memory)), key=memory.__getitem__)
    part = result["memory_parts"][worst]
    lines.append(f"block {worst}'s step: parameters, gradients and Adam "
                 f"{bytes_text(part['params_and_optimizer'])} and the EMA "
                 f"{bytes_text(part['ema'])} (only more blocks shrink them), activations "
                 f"{bytes_text(part['activations'])} (more blocks, train.checkpoint_layers, "
                 f"train.micro_batches and replicas shrink them) and beside them "
                 f"{bytes_text(part['working'])} of their gradients and other intermediates, "
                 f"inputs and noise draws "
                 f"{bytes_text(part['inputs'] + part['draws'])}")
    if "cluster" in result:
        lines += cluster_lines(cfg, result["cluster"])
    return "\n".join(lines)


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def block_memory(cfg: Config) -> list[int]:
    """Training bytes of one step of every block (the plan's byte meter)."""
    return [step_bytes(cfg, b, count_flops=False)["total"] for b in range(cfg.model.blocks)]


def _every_block_fits(cfg: Config, budget: float) -> bool:
    """Whether every block's step fits ``budget`` bytes; stops at the first that does not."""
    return all(step_bytes(cfg, b, count_flops=False)["total"] <= budget
               for b in range(cfg.model.blocks))


def fit_blocks(build: Callable[[int], Config]) -> int:
    """``model.blocks=auto``: the smallest B (a divisor of model.depth) whose every block
    trains within USABLE (90%) of runtime.device_memory, the rest left for what the plan
    does not count (cluster_fit.py); ConfigError naming the keys when none does."""
    base = build(1)
    limit = base.runtime.device_memory_bytes
    if not limit:
        raise ConfigError("model.blocks=auto: set runtime.device_memory (e.g. 80GiB), the "
                          "memory one block may use")
    largest = None
    for blocks in divisors(base.model.depth):
        try:
            cfg = build(blocks)
        except ConfigError:  # a B the task does not allow
            continue
        if _every_block_fits(cfg, USABLE * limit):
            return blocks
        largest = cfg
    detail = (f"; even B={largest.model.blocks} needs "
              f"{bytes_text(max(block_memory(largest)))} per block" if largest else "")
    checkpointing = "" if base.train.checkpoint_layers else "set train.checkpoint_layers=true, "
    raise ConfigError(f"model.blocks=auto: no B that divides model.depth={base.model.depth} "
                      f"trains within {USABLE:.0%} of runtime.device_memory="
                      f"{base.runtime.device_memory}"
                      f"{detail}; {checkpointing}raise train.micro_batches, lower "
                      f"train.batch_size or use a smaller model")


def memory_warning(cfg: Config) -> str | None:
    """What a run says before it starts where runtime.device_memory is set and a block's step,
    by the plan's count, needs more than USABLE of it (model.blocks=auto chose B to fit);
    None where every block fits or no device memory is given."""
    limit = cfg.runtime.device_memory_bytes
    if not limit or cfg.runtime.gpus_per_block == 0:
        return None
    need = block_memory(cfg)
    worst = max(range(len(need)), key=need.__getitem__)
    if need[worst] <= USABLE * limit:
        return None
    return (f"block {worst} needs about {bytes_text(need[worst])} for a training step by the "
            f"plan's count, more than {USABLE:.0%} of runtime.device_memory="
            f"{cfg.runtime.device_memory}: it may run out of device memory; `dbparallel plan` "
            f"with this config names the keys that shrink it (model.blocks=auto picks a B that "
            f"fits)")
