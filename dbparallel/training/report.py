"""report.json of a run: per-block training results and the composed network's metrics."""

from __future__ import annotations

from typing import Any

from dbparallel.config import Config
from dbparallel.tasks import build_task
from dbparallel.training.storage import Storage


def build_report(cfg: Config, run_id: str, per_block: list[dict[str, Any]],
                 assembly: dict[str, float], wall_time_s: float) -> dict[str, Any]:
    """The report of ``cfg``'s run, whose run directory's id is ``run_id`` (the label of its
    metrics, with ``run``)."""
    partition = build_task(cfg).partition
    return {
        "task": cfg.task,
        "run": cfg.run.name,
        "run_id": run_id,
        "blocks": cfg.model.blocks,
        "partition": [list(r) for r in partition.ranges],
        "per_block": sorted(per_block, key=lambda row: row["block"]),
        "assembly": assembly,
        "wall_time_s": wall_time_s,
    }


def write_report(storage: Storage, report: dict[str, Any]) -> None:
    """Write report.json; the final assembly's diagnostics (diagnostics.json) go into it as
    ``diagnostics`` (into ``report`` too)."""
    from dbparallel.training.eval.diagnostics import FILE

    if report.get("assembly") and storage.exists(FILE):
        report["diagnostics"] = storage.read_json(FILE)
    storage.write_json("report.json", report)
