"""Every Prometheus metric of dbparallel, defined in one place.

Recording a number (trainers return stats) is separate from exporting it (this module).
Through Ray's metrics system each name is exported with Ray's ``ray_`` prefix, and counters
gain ``_total``: ``dbparallel_block_steps`` is scraped as ``ray_dbparallel_block_steps_total``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["gauge", "counter"]


@dataclass(frozen=True)
class MetricSpec:
    """One metric: its base name (no prefix, no suffix), kind, labels and help text."""

    name: str
    kind: Kind
    description: str
    tag_keys: tuple[str, ...] = ("run", "block")


BLOCK_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("dbparallel_block_loss", "gauge", "Mean weighted training loss of the last step"),
    MetricSpec("dbparallel_block_steps", "counter", "Optimizer steps taken by the block"),
    MetricSpec("dbparallel_block_samples_per_second", "gauge", "Training samples per second"),
    MetricSpec("dbparallel_block_step_time_seconds", "gauge", "Wall time of the last step"),
    MetricSpec("dbparallel_block_sigma_low", "gauge", "Lower end of the block's noise range"),
    MetricSpec("dbparallel_block_sigma_high", "gauge", "Upper end of the block's noise range"),
    MetricSpec("dbparallel_block_memory_bytes", "gauge", "Peak training memory of one step"),
    MetricSpec("dbparallel_block_restarts", "counter", "Times the block's actor was restarted"),
    MetricSpec("dbparallel_block_nonfinite_steps", "counter", "Steps skipped for NaN/Inf loss"),
    MetricSpec("dbparallel_block_stalled", "gauge", "1 while the block has made no progress"),
)

# Metrics of the composed network; the metric key is appended to the base name.
ASSEMBLY_PREFIX = "dbparallel_assembly_"
ASSEMBLY_KEYS: tuple[str, ...] = ("sample_accuracy", "fd_indomain", "fid", "kid", "accuracy", "bpc")
ASSEMBLY_METRICS: tuple[MetricSpec, ...] = tuple(
    MetricSpec(ASSEMBLY_PREFIX + key, "gauge", f"Composed network: {key}", ("run",))
    for key in ASSEMBLY_KEYS
)

ALL_METRICS: tuple[MetricSpec, ...] = BLOCK_METRICS + ASSEMBLY_METRICS

RAY_PREFIX = "ray_"


def exported_name(spec: MetricSpec, through_ray: bool = True) -> str:
    """The name a Prometheus scrape shows for ``spec``."""
    name = spec.name + ("_total" if spec.kind == "counter" else "")
    return (RAY_PREFIX if through_ray else "") + name


def exported_names(through_ray: bool = True) -> set[str]:
    """All scrape names, as dashboards and alert rules must spell them."""
    return {exported_name(spec, through_ray) for spec in ALL_METRICS}
