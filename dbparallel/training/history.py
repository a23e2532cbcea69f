"""A run's training history in its run directory: a line per block every ``train.log_every``
steps, and a line per assembly.

- ``blocks/block_<b>/metrics.jsonl``, written by the block's lease holder (BlockRun):
  ``step``, ``loss`` (mean weighted loss of the last ``log_every`` finite steps), ``lr`` (of
  the last step), ``samples_per_s`` (samples over the seconds spent reading batches and
  stepping since the previous line; checkpoint writes and idle time left out),
  ``nonfinite_steps`` (so far), ``sigma_lo``, ``sigma_hi`` (the block's noise range, with
  overlap), ``noise_min``, ``noise_median``, ``noise_max`` (of the noise levels drawn since
  the previous line: sigma, for MDM the masking time t; absent where the loss draws none),
  ``heldout_loss`` (on the lines of the steps ``train.heldout_every`` names and the last) and
  ``time`` (Unix seconds).
- ``assembly.jsonl``, written by the driver alone: ``step`` (the lowest step among the block
  snapshots composed), the assembly's metrics, ``wall_s`` (seconds since the driver started).

A resumed block drops its lines after its checkpoint's step: the steps it replays write them
again (with the same values, as training is a pure function of seed and step), so no step is
missing or written twice.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
import re
import time
from typing import TYPE_CHECKING, Any

from dbparallel.training.checkpoint import block_dir
from dbparallel.training.storage import Storage

if TYPE_CHECKING:  # `dbparallel status` reads the history without torch
    from dbparallel.training.block_trainer import BlockTrainer, StepStats

ASSEMBLY_FILE = "assembly.jsonl"
# An object store's metrics.jsonl is rewritten whole (it has no append): at most this often,
# and with every checkpoint and the last step, not at each line, which would stop the block's
# steps for a request (and its lease's two) every train.log_every steps and upload the whole
# history each time. Its lines since the last checkpoint are kept in memory meanwhile: a
# resume drops those lines and writes them again anyway.
UPLOAD_EVERY_S = 30.0
log = logging.getLogger(__name__)


def finite_or_none(value: float | None) -> float | None:
    """``value``, or None (JSON null) for NaN and infinities, which strict JSON has not."""
    return value if value is not None and math.isfinite(value) else None


def metrics_file(block: int) -> str:
    return f"{block_dir(block)}/metrics.jsonl"


def _encode(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def read_lines(storage: Storage, rel: str) -> list[dict[str, Any]]:
    """The records of a JSON-lines file (none if it is absent). A last line without its
    newline is left out, unsaid: a local append being written as this reads (``status``,
    ``plot`` of a run that trains), or cut short by a crash (the block's next start
    rewrites the file without it). Another line that does not parse is skipped with a
    warning."""
    if not storage.exists(rel):
        return []
    records = []
    whole, _ = storage.read_bytes(rel).rpartition(b"\n")[::2]
    for n, line in enumerate(whole.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:  # not JSON, or not UTF-8
            log.warning("%s line %d is not JSON (a write cut short?); skipped",
                        storage.uri(rel), n)
    return records


class BlockHistory:
    """The metrics.jsonl of one block, continued from ``resumed_from``, the step of the
    checkpoint the block resumed from. Only the block's lease holder may create one."""

    def __init__(self, storage: Storage, block: int, resumed_from: int):
        self.storage, self.path = storage, metrics_file(block)
        kept = [r for r in read_lines(storage, self.path) if r["step"] <= resumed_from]
        if storage.exists(self.path) and storage.read_bytes(self.path) != _encode(kept):
            storage.write_bytes(self.path, _encode(kept))
        # Local files are appended to, one line at a time. Object stores cannot append: the
        # whole object is rewritten from the records held here, a few hundred bytes a line.
        self.records = [] if storage.is_local else kept
        self.kept = 0  # lines of an object store's history not uploaded yet
        self._uploaded = time.monotonic()
        self._samples, self._seconds = 0, 0.0
        self._last_step = kept[-1]["step"] if kept else 0  # the previous line's step

    def observe(self, stats: StepStats, seconds: float) -> None:
        """Count a step that took ``seconds`` of wall time (reading its batch included)."""
        self._samples += stats.samples
        self._seconds += seconds

    def due(self) -> bool:
        """Whether the next line is written at once: always on a file system; on an object
        store once UPLOAD_EVERY_S have passed since the last upload."""
        return self.storage.is_local or \
            time.monotonic() - self._uploaded >= UPLOAD_EVERY_S

    def flush(self) -> None:
        """Upload an object store's lines kept since the last upload (none: nothing)."""
        if self.kept:
            self.storage.write_bytes(self.path, _encode(self.records))
            self.kept, self._uploaded = 0, time.monotonic()

    def write(self, trainer: BlockTrainer, now: bool = True) -> dict[str, Any]:
        """Append the line of ``trainer``'s current step; returns it. On an object store it is
        kept, with the lines before it, until a write ``now`` or a ``flush``."""
        from dbparallel.training.noise_stats import noise_stats

        record = {
            "step": trainer.step,
            "loss": finite_or_none(trainer.final_loss),
            "lr": trainer.lr_at(trainer.step - 1),
            "samples_per_s": self._samples / self._seconds if self._seconds > 0 else None,
            "nonfinite_steps": trainer.nonfinite_steps,
            "sigma_lo": trainer.sigma_range[0],
            "sigma_hi": trainer.sigma_range[1],
            # the noise levels drawn since the previous line (sigma; MDM: masking time t)
            **(noise_stats(trainer.cfg, trainer.task, trainer.block,
                           range(max(0, self._last_step), trainer.step), trainer.device) or {}),
            # the EMA weights' loss on held-out rows, at the steps train.heldout_every names
            **({"heldout_loss": finite_or_none(trainer.heldout_loss)}
               if trainer.heldout_step == trainer.step else {}),
            "time": round(time.time(), 3),
        }
        self._last_step = trainer.step
        self._samples, self._seconds = 0, 0.0
        if self.storage.is_local:
            path = self.storage.path(self.path)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "a") as f:
                f.write(json.dumps(record) + "\n")
        else:
            self.records.append(record)
            self.kept += 1
            if now:
                self.flush()
        return record


def append_assembly(storage: Storage, step: int, metrics: dict[str, float],
                    wall_s: float) -> None:
    """Add the line of an assembly of the snapshots of ``step`` to assembly.jsonl. A line for
    ``step`` replaces those of ``step`` and later (a resumed run assembles them again), so the
    file stays in increasing steps. Only the driver writes it; it is small, so it is rewritten
    whole, on local disks and object stores alike."""
    kept = [r for r in read_lines(storage, ASSEMBLY_FILE) if r["step"] < step]
    values = {k: _number(v) for k, v in metrics.items() if k != "block_steps_min"}
    kept.append({"step": step, **values, "wall_s": round(wall_s, 3)})
    storage.write_bytes(ASSEMBLY_FILE, _encode(kept))


class AssemblyLog:
    """The driver's writer of assembly.jsonl; ``wall_s`` counts from ``start``, the
    ``time.perf_counter()`` of the run's start. A line that cannot be written is logged, never
    fatal: a storage hiccup must not end a long run."""

    def __init__(self, storage: Storage, start: float):
        self.storage, self.start = storage, start

    def append(self, step: int, metrics: dict[str, float]) -> None:
        try:
            append_assembly(self.storage, step, metrics, time.perf_counter() - self.start)
        except OSError as err:
            log.warning("could not write %s: %s", self.storage.uri(ASSEMBLY_FILE), err)


def read_history(storage: Storage) -> dict[int, list[dict[str, Any]]]:
    """Every block's metrics.jsonl records, by block (blocks without any left out)."""
    blocks = sorted(int(m.group(1)) for name in storage.listdir("blocks")
                    if (m := re.fullmatch(r"block_(\d+)", name)))
    history = {b: read_lines(storage, metrics_file(b)) for b in blocks}
    return {b: records for b, records in history.items() if records}


def _number(value: Any) -> int | float | None:
    """A metric as assembly.jsonl writes it: counts whole; None (kid_std of one KID subset)
    and a number that is not finite as null, which strict JSON readers (jq) take."""
    if value is None:
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    value = float(value)
    return value if math.isfinite(value) else None


def read_assemblies(storage: Storage) -> list[dict[str, Any]]:
    return read_lines(storage, ASSEMBLY_FILE)
