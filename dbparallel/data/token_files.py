"""The token files of a tokenized corpus (data/corpus.py): one append-only file per split, the
ids of its rows row-major, uint8 when the vocabulary fits 256 ids, else uint16; and, for BPE,
``TRAIN_IDS_FILE``, the ids the train split holds (generation draws only those,
data/tokenizer.py).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from dbparallel.data.shards import SPLITS
from dbparallel.data.tokenizer import TRAIN_IDS_FILE
from dbparallel.errors import DataError

log = logging.getLogger(__name__)

MAX_IDS = 1 << 16  # token files are uint16 at most


class TokenFiles:
    """One append-only token file per split."""

    def __init__(self, folder: Path, dtype: np.dtype):
        self.dtype = dtype
        self.files = {s: open(folder / f"{s}.bin", "wb") for s in SPLITS}  # noqa: SIM115
        self.ids = dict.fromkeys(SPLITS, 0)
        self.counts = {s: [0, 0] for s in SPLITS}  # [read, kept] of corpus._whole_rows
        self.in_train = np.zeros(MAX_IDS, dtype=bool)  # the ids the train split holds

    def write(self, split: str, ids: np.ndarray) -> None:
        self.files[split].write(ids.astype(self.dtype).data)
        self.ids[split] += len(ids)
        if split == "train":
            self.in_train[ids] = True

    def close(self) -> None:
        for f in self.files.values():
            f.flush()
            os.fsync(f.fileno())
            f.close()

    def rows(self, seq_len: int) -> dict[str, int]:
        return {s: n // seq_len for s, n in self.ids.items()}


def token_dtype(ids: int) -> np.dtype:
    """The dtype of the token files of a tokenizer of ``ids`` ids; DataError past MAX_IDS."""
    if ids > MAX_IDS:
        raise DataError(f"data.vocab_size: token files hold at most {MAX_IDS} ids, "
                        f"the tokenizer has {ids}")
    return np.dtype(np.uint8 if ids <= 256 else np.uint16)


def write_ids(path: Path, ids: np.ndarray) -> None:
    """``ids`` as a JSON list, written whole or not at all."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}")
    tmp.write_text(json.dumps([int(i) for i in ids]))
    os.replace(tmp, path)


def train_ids(folder: Path, dtype: np.dtype) -> None:
    """TRAIN_IDS_FILE of a BPE corpus built before it was kept: the ids of train.bin, read
    once in blocks (a read-only cache keeps today's behaviour: every id is drawn)."""
    data = np.memmap(folder / "train.bin", dtype=dtype, mode="r")
    seen = np.zeros(MAX_IDS, dtype=bool)
    for first in range(0, len(data), 1 << 24):
        seen[np.asarray(data[first:first + (1 << 24)])] = True
    try:
        write_ids(folder / TRAIN_IDS_FILE, np.flatnonzero(seen))
    except OSError as err:
        log.warning("%s: cannot write %s (%s); generation may draw any id", folder,
                    TRAIN_IDS_FILE, err)
