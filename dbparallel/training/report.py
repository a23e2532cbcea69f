"""report.json of a run: per-block training results and the composed network's metrics,
written once the run is assembled, and read back for ``dbparallel status`` (status.py)."""

from __future__ import annotations

import math
from typing import Any

from dbparallel.config import Config
from dbparallel.training.storage import DamagedFile, Storage, damaged

REPORT_FILE = "report.json"
REPORT_REMEDY = ("run the command that trained the run again (`dbparallel train` without "
                 "--block, or `dbparallel baseline`): it trains what is left, assembles the "
                 "blocks and writes report.json again")


def build_report(cfg: Config, run_id: str, per_block: list[dict[str, Any]],
                 assembly: dict[str, float], wall_time_s: float) -> dict[str, Any]:
    """The report of ``cfg``'s run, whose run directory's id is ``run_id`` (the label of its
    metrics, with ``run``)."""
    from dbparallel.tasks import build_task  # torch: `dbparallel status` reads reports without

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
    storage.write_json(REPORT_FILE, strict_json(report))


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite number as None (null): strict JSON, which readers
    other than Python's (jq, JavaScript) refuse NaN in, e.g. the final loss of a block that
    took no finite step."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    return value


def read_report(storage: Storage, now: float) -> tuple[bool, float | None, str]:
    """(written, age_s, problem) of report.json in ``storage`` at Unix time ``now``: whether
    it was written, how long ago (None where the store does not say), and, for one that is
    there but cannot be read as a report, its error, which names it (it counts as not
    written)."""
    if not storage.exists(REPORT_FILE):
        return False, None, ""
    try:
        found = storage.read_json(REPORT_FILE)
    except DamagedFile as err:
        why = err.why
    except FileNotFoundError:  # deleted since (a rerun replacing it on an object store)
        return False, None, ""
    else:
        if isinstance(found, dict) and isinstance(found.get("per_block"), list) \
                and isinstance(found.get("assembly"), dict):
            written = storage.modified(REPORT_FILE)
            return True, None if written is None else max(0.0, now - written), ""
        why = 'expected {"per_block": [...], "assembly": {...}, ...}'
    return False, None, str(damaged(storage.uri(REPORT_FILE), why, REPORT_REMEDY))
