"""What a run is called by default: ``<data>-<task>``, the data named after data.path's last
part (the default run.name, and so the default run directory ``runs/<run.name>``)."""

from __future__ import annotations

import re
from typing import Protocol


class DataConfig(Protocol):  # what of the schema's DataConfig names the data
    path: str
    source: str


DATA_SUFFIXES = (".parquet", ".pq", ".txt", ".text", ".jsonl", ".ndjson", ".json", ".gz",
                 ".bz2", ".xz", ".zst", ".idx", ".ubyte")


def data_name(data: DataConfig) -> str:
    """What a default run.name calls the data: data.path's last part without the suffixes of
    data files (``/data/pets`` -> pets, ``s3://b/imagenet64/`` -> imagenet64,
    ``notes.jsonl.gz`` -> notes, ``/data/pets.v2`` -> pets.v2), in letters, digits, ``.``,
    ``_`` and ``-``; else data.source."""
    last = data.path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    while last.lower().endswith(DATA_SUFFIXES):
        last = last[:last.rindex(".")]
    last = re.sub(r"[^A-Za-z0-9._-]+", "-", last).strip("-.")
    return last or data.source
