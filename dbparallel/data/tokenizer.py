"""Tokenizers of text corpora, characters or byte-level BPE, behind one small interface.

``char``: every distinct character of the corpus's kept rows in code-point order; a
character's id is its rank. ``bpe``: a byte-level BPE (Hugging Face ``tokenizers``, offline)
trained on the training split, ``data.vocab_size`` ids at most: the 256 byte symbols plus
merges, so any text can be encoded. Everything else (tasks, evaluation, samples) sees only
``load_tokenizer(index.meta)``: ``encode``, ``decode``, ``vocab_size`` and ``usable``.

``usable`` is what generation may draw. A character vocabulary holds only characters of the
corpus, so every id below ``vocab_size``; a byte-level BPE holds all 256 bytes, most of which
an ASCII corpus never uses (NUL, control bytes, halves of UTF-8 sequences that decode to
U+FFFD), so only the ids the training split's tokens hold (``train_ids``: ``TRAIN_IDS_FILE``
beside a corpus's tokenizer file, ``TRAIN_IDS_KEY`` in a run's vocab.json and an export). A
tokenizer without them (a run or an export made before they were kept) draws every id.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Hashable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import torch

from dbparallel.errors import DataError

BYTE_SYMBOLS = 256  # the base alphabet of a byte-level BPE
log = logging.getLogger(__name__)

REPLACEMENT = "\ufffd"  # what an id outside the vocabulary decodes to
NAMED_CHARACTERS = 10  # unknown characters an error names, each once
TRAIN_IDS_FILE = "train_ids.json"  # beside a BPE corpus's tokenizer file: its train ids
TRAIN_IDS_KEY = "dbparallel_train_ids"  # the same list in a BPE tokenizer's description
Key = TypeVar("Key", bound=Hashable)
Usable = int | torch.Tensor  # what generation draws: ids below an int, or a tensor of ids


class Tokenizer(Protocol):
    """Text to token ids and back."""

    name: str  # "char" | "bpe"
    vocab_size: int  # ids in use: 0 .. vocab_size - 1

    @property
    def usable(self) -> Usable:
        """The ids generation may draw (``gumbel_sample``)."""
        ...

    def encode(self, text: str) -> list[int]:
        ...

    def decode(self, ids: Iterable[int] | torch.Tensor | np.ndarray) -> str:
        """The text of ``ids``; ids outside the vocabulary read as U+FFFD."""
        ...

    def describe(self) -> dict[str, Any]:
        """What a run directory keeps as vocab.json."""
        ...


def _id_list(ids: Iterable[int] | torch.Tensor | np.ndarray) -> list[int]:
    if isinstance(ids, torch.Tensor | np.ndarray):
        return [int(i) for i in ids.tolist()]
    return [int(i) for i in ids]


def codepoints(text: str) -> np.ndarray:
    """The code points of ``text``, (len(text),) uint32."""
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")


# ---------------------------------------------------------------------------------------------
# Characters
# ---------------------------------------------------------------------------------------------

class CharTokenizer:
    """One id per character of ``vocab`` (a string of distinct characters)."""

    name = "char"

    def __init__(self, vocab: str):
        self.vocab = vocab
        self.vocab_size = len(vocab)
        known = codepoints(vocab).astype(np.int64)
        self._lookup = np.full(int(known.max(initial=0)) + 1, -1, dtype=np.int32)
        self._lookup[known] = np.arange(len(known))

    @property
    def usable(self) -> Usable:
        return self.vocab_size  # every character is one of the corpus's

    def encode_array(self, text: str) -> np.ndarray:
        """Token ids (len(text),) int32; DataError naming the characters the vocabulary
        lacks (``unknown_characters``)."""
        codes = codepoints(text)
        if int(codes.max(initial=0)) < len(self._lookup):
            ids = self._lookup[codes]
            if not (ids < 0).any():
                return ids
        inside = codes < len(self._lookup)
        unknown = ~inside
        unknown[inside] = self._lookup[codes[inside]] < 0
        raise unknown_characters(codes[unknown])

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def decode(self, ids: Iterable[int] | torch.Tensor | np.ndarray) -> str:
        v = self.vocab
        return "".join(v[i] if 0 <= i < len(v) else REPLACEMENT for i in _id_list(ids))

    def describe(self) -> dict[str, Any]:
        return {"vocab": list(self.vocab)}


def unknown_characters(codes: np.ndarray) -> DataError:
    """The DataError of code points ``codes`` a vocabulary lacks: each distinct one, in the
    order of its first place, with its code point (``NAMED_CHARACTERS`` at most, then how
    many more)."""
    found, first = np.unique(codes, return_index=True)
    ordered = [int(c) for c in found[np.argsort(first)]]
    shown = ", ".join(f"{chr(c)!r} (U+{c:04X})" for c in ordered[:NAMED_CHARACTERS])
    if len(ordered) == 1:
        return DataError(f"character {shown} is not in the vocabulary")
    more = len(ordered) - NAMED_CHARACTERS
    return DataError(f"characters {shown}{f' and {more} more' if more > 0 else ''} are not "
                     f"in the vocabulary")


def vocabulary_difference(given: Tokenizer, trained: Tokenizer) -> str:
    """``; characters 'x' (U+0078) only in these texts, 'y' (U+0079) only in the network's``:
    how two character vocabularies differ (each side's first ``NAMED_CHARACTERS``); "" for
    BPE, whose merges say nothing a reader can act on."""
    if not isinstance(given, CharTokenizer) or not isinstance(trained, CharTokenizer):
        return ""
    sides = []
    for chars, where in ((sorted(set(given.vocab) - set(trained.vocab)), "these texts"),
                         (sorted(set(trained.vocab) - set(given.vocab)), "the network's")):
        if chars:
            shown = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in chars[:NAMED_CHARACTERS])
            more = f" and {len(chars) - NAMED_CHARACTERS} more" \
                if len(chars) > NAMED_CHARACTERS else ""
            sides.append(f"{shown}{more} only in {where}")
    return f"; characters {', '.join(sides)}" if sides else ""


class CharCounter:
    """The distinct characters of texts seen one piece at a time (memory: one flag per code
    point up to the largest seen)."""

    def __init__(self) -> None:
        self.seen = np.zeros(BYTE_SYMBOLS, dtype=bool)

    def add(self, text: str) -> None:
        codes = codepoints(text)
        top = int(codes.max(initial=0))
        if top >= len(self.seen):
            self.seen = np.concatenate([self.seen, np.zeros(top + 1 - len(self.seen), bool)])
        self.seen[codes] = True

    def vocabulary(self, vocab_size: int) -> str:
        """Every character seen, in code-point order; DataError when they exceed
        ``vocab_size``."""
        codes = np.flatnonzero(self.seen)
        if len(codes) > vocab_size:
            raise DataError(f"data.vocab_size: the text has {len(codes)} distinct characters, "
                            f"more than data.vocab_size={vocab_size}; raise it")
        return "".join(map(chr, codes))


# ---------------------------------------------------------------------------------------------
# Byte-level BPE
# ---------------------------------------------------------------------------------------------

class BpeTokenizer:
    """A byte-level BPE of Hugging Face ``tokenizers`` (no special tokens, no added prefix
    space, so ``decode(encode(text)) == text``)."""

    name = "bpe"

    def __init__(self, tokenizer: Any, train_ids: Iterable[int] | None = None):
        self.tokenizer = tokenizer
        self.vocab_size = int(tokenizer.get_vocab_size())
        self.train_ids = None if train_ids is None else sorted({int(i) for i in train_ids})

    @property
    def usable(self) -> Usable:
        if not self.train_ids:
            return self.vocab_size
        return torch.tensor(self.train_ids, dtype=torch.long)

    @classmethod
    def from_file(cls, path: str | Path) -> BpeTokenizer:
        """The tokenizer of a corpus's tokenizer file, with the train ids beside it if
        kept."""
        from tokenizers import Tokenizer as HFTokenizer

        try:
            tokenizer = HFTokenizer.from_file(str(path))
        except Exception as err:  # tokenizers raises a bare Exception on a bad file
            raise DataError(f"{path}: not a readable tokenizer file: {err}") from None
        ids = Path(path).with_name(TRAIN_IDS_FILE)
        return cls(tokenizer, json.loads(ids.read_text()) if ids.is_file() else None)

    def save(self, path: str | Path) -> None:
        self.tokenizer.save(str(path))

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> Iterator[np.ndarray]:
        """Token ids (int32) of each text, encoded in parallel, handed out one at a time."""
        for encoding in self.tokenizer.encode_batch_fast(texts, add_special_tokens=False):
            yield np.asarray(encoding.ids, dtype=np.int32)

    def encode_stream(self, pieces: Iterator[tuple[Key, str]],
                      batch: int) -> Iterator[tuple[Key, np.ndarray]]:
        """(key, token ids) of each (key, text), ``batch`` texts encoded together."""
        pending: list[tuple[Key, str]] = []
        for piece in itertools.chain(pieces, [None]):
            if piece is not None:
                pending.append(piece)
            if pending and (piece is None or len(pending) == batch):
                ids = self.encode_batch([text for _, text in pending])
                yield from ((key, x) for (key, _), x in zip(pending, ids, strict=True))
                pending = []

    def decode(self, ids: Iterable[int] | torch.Tensor | np.ndarray) -> str:
        # tokenizers drops unknown ids silently; keep them visible as U+FFFD
        out, run = [], []
        for i in _id_list(ids):
            if 0 <= i < self.vocab_size:
                run.append(i)
                continue
            out += [self.tokenizer.decode(run), REPLACEMENT]
            run = []
        return "".join(out) + self.tokenizer.decode(run)

    def describe(self) -> dict[str, Any]:
        description = json.loads(self.tokenizer.to_str())
        if self.train_ids is not None:
            description[TRAIN_IDS_KEY] = self.train_ids
        return description


def train_bpe(texts: Iterator[str], vocab_size: int) -> BpeTokenizer:
    """A byte-level BPE of at most ``vocab_size`` ids trained on ``texts`` (streamed); it
    holds fewer where the texts run out of pairs to merge (``warn_fewer_ids``)."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    if vocab_size < BYTE_SYMBOLS:
        raise DataError(f"data.vocab_size: a byte-level BPE holds the {BYTE_SYMBOLS} byte "
                        f"symbols plus its merges; set data.vocab_size >= {BYTE_SYMBOLS} "
                        f"(got {vocab_size})")
    tokenizer = HFTokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False, special_tokens=[],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    return BpeTokenizer(tokenizer)


def warn_fewer_ids(label: str, learned: int, vocab_size: int) -> None:
    """Warn when a BPE of ``label``'s texts learned fewer ids than ``data.vocab_size``
    (its training text ran out of pairs to merge): the model holds unused ids."""
    if learned < vocab_size:
        log.warning("%s: the BPE learned %d of data.vocab_size=%d ids (%d merges: the training "
                    "text has no more pairs to merge); the model holds %d ids all the same, and "
                    "data.vocab_size=%d gives the same tokens with a smaller embedding and head",
                    label, learned, vocab_size, learned - BYTE_SYMBOLS, vocab_size, learned)


def load_tokenizer(meta: dict[str, Any]) -> Tokenizer:
    """The tokenizer of a token index's ``meta`` (data/corpus.py)."""
    if meta.get("tokenizer") == "char":
        return CharTokenizer(meta["vocab"])
    if meta.get("tokenizer") == "bpe":
        return BpeTokenizer.from_file(meta["tokenizer_file"])
    raise DataError(f"data.tokenizer: unknown tokenizer {meta.get('tokenizer')!r} in the index")


def tokenizer_from_description(description: dict[str, Any]) -> Tokenizer:
    """The tokenizer that ``describe()`` wrote (a run directory's vocab.json, an export's
    metadata): a character list, or a BPE tokenizer's own JSON."""
    if set(description) == {"vocab"} and isinstance(description["vocab"], list):
        return CharTokenizer("".join(description["vocab"]))
    from tokenizers import Tokenizer as HFTokenizer

    own = {k: v for k, v in description.items() if k != TRAIN_IDS_KEY}
    try:
        return BpeTokenizer(HFTokenizer.from_str(json.dumps(own)),
                            description.get(TRAIN_IDS_KEY))
    except Exception as err:  # tokenizers raises a bare Exception on a bad description
        raise DataError(f"not a readable tokenizer description: {err}") from None
