"""A data set as shards: the pieces every block reads, a window of them at a time.

Every source (Parquet files, a folder of images, a tokenized corpus, the built-in sets)
becomes a ``DataIndex``: per split, an ordered list of ``Shard``s with their row counts. The
index is small (no rows), cheap to build (Parquet footers, file listings), and pins the data
of a run through its ``fingerprint``. Rows are read one shard at a time (data/shard_reader.py),
so nothing ever holds the whole data set.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from dbparallel.errors import DataError

SPLITS = ("train", "validation", "test")
ALIASES_TEXT = "train, validation, test (any case; also training, val, valid, dev, testing)"
# the names of a split (any case): of a folder or file (data/parquet_index.py,
# data/image_folder.py), and the values of a ``split`` column or field (data/splits.py,
# data/text_files.py); "eval" is left out: some data sets mean validation by it, others test
SPLIT_NAMES = {"train": "train", "training": "train",
               "validation": "validation", "val": "validation", "valid": "validation",
               "dev": "validation",
               "test": "test", "testing": "test"}
KINDS = ("parquet", "files", "tokens")
PATH_KEYS = ("tokenizer_file",)  # meta entries that name a place on this machine
TRAIN_EVAL_ROWS = 10_000  # training rows scored when a data set has no test split


def split_of_name(name: str) -> str | None:
    """The split a folder or file-name token, or a split column's value, names (``val`` ->
    ``validation``), else None."""
    return SPLIT_NAMES.get(name.lower())


@dataclass(frozen=True)
class Shard:
    """One readable piece of a split.

    parquet: row group ``row_group`` of the Parquet file ``uri`` (its first row is row
    ``first_row`` of the file), keeping only the rows whose ``split`` column is
    ``split_filter`` when that is set. files: the image files ``files`` (relative to the folder
    ``uri``) with their ``labels``. tokens: rows [first_row, first_row + rows) of the token
    file ``uri`` (``seq_len`` ids per row, dtype from the index's ``meta``).
    """

    kind: str
    uri: str
    rows: int  # rows of the split in this shard
    row_group: int = -1
    first_row: int = 0
    split_filter: str = ""
    files: tuple[str, ...] = ()
    labels: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Shard:
        d = dict(d)
        d["files"], d["labels"] = tuple(d.get("files", ())), tuple(d.get("labels", ()))
        return cls(**d)


@dataclass(frozen=True)
class DataIndex:
    """Every split of a data set as shards; ``meta`` holds what decoding needs (for tokens:
    ``seq_len``, ``dtype``, the tokenizer; for images: the image column's ``encoding``)."""

    kind: str  # "images" | "tokens"
    source: str  # where it came from, for messages
    splits: dict[str, tuple[Shard, ...]]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        assert self.kind in ("images", "tokens"), self.kind
        assert all(s in SPLITS for s in self.splits), list(self.splits)
        assert all(sh.kind in KINDS for shards in self.splits.values() for sh in shards)

    def shards(self, split: str) -> tuple[Shard, ...]:
        """The shards of ``split``; DataError when it has none."""
        shards = self.splits.get(split, ())
        if not shards or not sum(s.rows for s in shards):
            hint = ("; rows train unless a 'split' column or their path (a file or folder "
                    "named test, val, ...) puts them in another split"
                    if split == "train" and self.kind == "images" else "")
            raise DataError(f"{self.source}: no {split!r} rows (splits here: "
                            f"{', '.join(self.present()) or 'none'}){hint}")
        return shards

    def num_rows(self, split: str) -> int:
        return sum(s.rows for s in self.splits.get(split, ()))

    def present(self) -> list[str]:
        """Splits with at least one row."""
        return [s for s in SPLITS if self.num_rows(s)]

    @property
    def eval_split(self) -> str:
        """The rows the composed network is scored on: test, else the training rows."""
        return "test" if self.num_rows("test") else "train"

    @property
    def heldout_split(self) -> str:
        """The rows each block's held-out loss is measured on while it trains: validation,
        else test, else (a check, not held out) the training rows."""
        return next((s for s in ("validation", "test") if self.num_rows(s)), "train")

    def eval_rows(self, asked: int = 0) -> int:
        """How many of ``eval_split``'s rows are scored: ``asked`` (sample.eval_rows) if given,
        else every test row, or at most TRAIN_EVAL_ROWS training rows when there is no test
        split (a score on rows a network trained on is a sanity check, not worth a pass over
        a large data set)."""
        have = self.num_rows(self.eval_split)
        if asked:
            return min(asked, have)
        return have if self.eval_split == "test" else min(have, TRAIN_EVAL_ROWS)

    @property
    def fingerprint(self) -> str:
        """Identifies the rows: the same index (files, sizes, row groups) gives the same key.
        Files are named without their folder and cache paths are left out, so a data set
        built into another machine's cache has the same fingerprint."""
        d = self.to_json()
        d["meta"] = {k: v for k, v in d["meta"].items() if k not in PATH_KEYS}
        for shards in d["splits"].values():
            for s in shards:
                s["uri"] = s["uri"].split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        text = json.dumps(d, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "source": self.source, "meta": self.meta,
                "splits": {k: [s.to_json() for s in v] for k, v in self.splits.items()}}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> DataIndex:
        splits = {k: tuple(Shard.from_json(s) for s in v) for k, v in d["splits"].items()}
        return cls(d["kind"], d["source"], splits, dict(d.get("meta", {})))
