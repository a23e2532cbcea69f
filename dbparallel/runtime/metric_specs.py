"""Every Prometheus metric of dbparallel, defined in one place: its name, kind, labels and help.

Through Ray's metrics system each name is exported with Ray's ``ray_`` prefix, and counters
gain ``_total``: ``dbparallel_block_steps`` is scraped as ``ray_dbparallel_block_steps_total``.

Labels: ``run`` (run.name, shared by every run of a recipe: what dashboards and alerts pick
runs by), ``run_id`` (the run directory's id, training/run_id.py: an earlier run of that name,
whose dead workers' counters Ray keeps exporting, or one training beside it, is told apart)
and, for blocks, ``block``. No per-process or per-step label.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["gauge", "counter"]
RUN_LABELS = ("run", "run_id")  # the labels of a run's series: run.name, the run directory's id


@dataclass(frozen=True)
class MetricSpec:
    """One metric: its base name (no prefix, no suffix), kind, labels and help text."""

    name: str
    kind: Kind
    description: str
    tag_keys: tuple[str, ...] = ("run", "run_id", "block")


BLOCK_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("dbparallel_block_loss", "gauge", "Mean weighted training loss of the last step"),
    MetricSpec("dbparallel_block_heldout_loss", "gauge",
               "Mean weighted loss of the block's EMA weights on held-out rows, fixed noise "
               "(every train.heldout_every steps)"),
    MetricSpec("dbparallel_block_steps", "counter", "Optimizer steps taken by the block"),
    MetricSpec("dbparallel_block_samples_per_second", "gauge", "Training samples per second"),
    MetricSpec("dbparallel_block_step_time_seconds", "gauge", "Wall time of the last step"),
    MetricSpec("dbparallel_block_sigma_low", "gauge", "Lower end of the block's noise range"),
    MetricSpec("dbparallel_block_sigma_high", "gauge", "Upper end of the block's noise range"),
    MetricSpec("dbparallel_block_memory_bytes", "gauge", "Peak training memory of one step"),
    MetricSpec("dbparallel_block_restarts", "counter", "Times the block's actor was restarted"),
    MetricSpec("dbparallel_block_nonfinite_steps", "counter", "Steps skipped for NaN/Inf loss"),
    MetricSpec("dbparallel_block_stalled", "gauge", "1 while the block has made no progress"),
    MetricSpec("dbparallel_block_model_flops_per_step", "gauge",
               "Forward and backward matmul FLOPs of one training step"),
    MetricSpec("dbparallel_block_achieved_tflops", "gauge",
               "Model TFLOP/s of the last step (model FLOPs per step / step time)"),
    MetricSpec("dbparallel_block_mfu", "gauge",
               "Model FLOPs utilisation of the last step: achieved / the device's dense peak "
               "(GPUs with a known peak only)"),
    MetricSpec("dbparallel_block_data_wait_ratio", "gauge",
               "Share of the last step's time the block waited for its batch (0: the data "
               "kept up)"),
)

# Metrics of the composed network; the metric key is appended to the base name.
ASSEMBLY_PREFIX = "dbparallel_assembly_"
# bpc: the sampler's bits per character (MDM: its ELBO); bpc_sigma_max: AR's and looped's
# likelihood bits per character (the chain's first step, training/eval/text.py); gen_ppl and
# sample_entropy: the scorer's perplexity and the entropy of generated continuations
ASSEMBLY_KEYS: tuple[str, ...] = ("sample_accuracy", "fd_indomain", "fid", "kid", "accuracy",
                                  "bpc", "bpc_sigma_max", "gen_ppl", "sample_entropy")
ASSEMBLY_METRICS: tuple[MetricSpec, ...] = tuple(
    MetricSpec(ASSEMBLY_PREFIX + key, "gauge", f"Composed network: {key}", RUN_LABELS)
    for key in ASSEMBLY_KEYS
)

RUN_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("dbparallel_assembly_failures", "counter",
               "Assemblies during training that failed (training went on)", RUN_LABELS),
)

ALL_METRICS: tuple[MetricSpec, ...] = BLOCK_METRICS + ASSEMBLY_METRICS + RUN_METRICS

RAY_PREFIX = "ray_"


def exported_name(spec: MetricSpec) -> str:
    """The name a Prometheus scrape shows for ``spec``, from a Ray run's nodes and from a
    local run's endpoint alike (which takes Ray's prefix, so one dashboard reads both)."""
    return RAY_PREFIX + spec.name + ("_total" if spec.kind == "counter" else "")


def exported_names() -> set[str]:
    """All scrape names, as dashboards and alert rules must spell them."""
    return {exported_name(spec) for spec in ALL_METRICS}


SPEC = {spec.name: spec for spec in ALL_METRICS}
