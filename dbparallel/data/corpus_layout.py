"""The first pass over a text corpus: which split every document's characters go to, and
what each split holds (``Layout``); the errors and the warning that come from it.

With ``WORK_PERIOD`` documents or more, document i goes whole to ``work_split(i)`` (split by
work); with fewer, each is cut by character position (``position_parts``). A document with a
``split`` of its own goes there whole.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

from dbparallel.config import DataConfig
from dbparallel.data.shards import SPLITS
from dbparallel.data.text import (
    POSITION_CUTS,
    TEST_AT,
    VALIDATION_AT,
    WORK_PERIOD,
    TextSource,
    position_parts,
    work_split,
)
from dbparallel.data.text_files import Document
from dbparallel.errors import DataError

log = logging.getLogger(__name__)

END = sys.maxsize  # the end of a document whose length is not needed
DROP_WARN = 0.10  # share of a split's text in dropped tails above which a build warns
NAMED = 5  # files an error names

Part = tuple[str, int, int]  # (split, first character, end character) of a document


@dataclass
class Tally:
    """What one split holds: characters, its documents (non-empty parts) and the rows of
    one character per token within them."""

    characters: int = 0
    documents: int = 0
    rows: int = 0

    def add(self, chars: int, seq_len: int) -> None:
        self.characters += chars
        self.documents += chars > 0
        self.rows += chars // seq_len

    def char_rows(self, seq_len: int, pack: bool) -> int:
        """Rows of one character per token; packed, the separators count too."""
        if not pack:
            return self.rows
        return (self.characters + max(self.documents - 1, 0)) // seq_len


@dataclass(frozen=True)
class Layout:
    """What the first pass learns: how many documents (split by work or by position), their
    characters, the lengths of the few documents that position splits need, and what each
    split holds."""

    documents: int
    characters: int
    head: tuple[tuple[int, str | None], ...]  # (characters, given split), first 13 documents
    splits: dict[str, Tally]
    given: int = 0  # documents with a split of their own

    def parts(self, i: int, doc: Document) -> list[Part]:
        if doc.split is not None:
            return [(doc.split, 0, END)]
        if self.documents >= WORK_PERIOD:
            return [(work_split(i), 0, END)]
        return position_parts(self.head[i][0])

    def char_rows(self, seq_len: int, pack: bool) -> dict[str, int]:
        """Rows per split with one character per token."""
        return {s: t.char_rows(seq_len, pack) for s, t in self.splits.items()}


def layout_of(source: TextSource, seq_len: int) -> Layout:
    """The first pass: every document counted, and the layout of its characters in splits;
    DataError when there is none."""
    count = characters = given = 0
    head: list[tuple[int, str | None]] = []
    by_work = {s: Tally() for s in SPLITS}  # what each split holds when split by work
    for i, doc in enumerate(source.documents()):
        chars = sum(len(piece) for piece in doc.pieces)
        by_work[doc.split or work_split(i)].add(chars, seq_len)
        if i < WORK_PERIOD - 1:
            head.append((chars, doc.split))
        count, characters, given = i + 1, characters + chars, given + (doc.split is not None)
    if not characters:
        raise _no_text(source, count)
    if count >= WORK_PERIOD:
        return Layout(count, characters, tuple(head), by_work, given)
    splits = {s: Tally() for s in SPLITS}
    for chars, split in head:
        for s, a, b in [(split, 0, chars)] if split else position_parts(chars):
            splits[s].add(b - a, seq_len)
    return Layout(count, characters, tuple(head), splits, given)


def _documents(count: int) -> str:
    return f"{count:,} document{'s' if count != 1 else ''}"


def _characters(count: int) -> str:
    return f"{count:,} character{'s' if count != 1 else ''}"


def _no_text(source: TextSource, count: int) -> DataError:
    """DataError for a corpus with no character in it, naming its files."""
    files = [path for path, _ in source.files]
    what = f"{_documents(count)} of 0 characters" if count else "no documents"
    if len(files) == 1:
        return DataError(f"data.path: {files[0]!r} holds no text ({what})")
    named = ", ".join(repr(f) for f in files[:NAMED])
    more = f" and {len(files) - NAMED:,} more" if len(files) > NAMED else ""
    return DataError(f"data.path: {source.label!r} holds no text ({what}) in its "
                     f"{len(files):,} files: {named}{more}")


def check_rows(rows: dict[str, int], layout: Layout, data: DataConfig,
               packable: dict[str, bool]) -> None:
    """DataError for a split with text but no row (``packable``: whether data.pack=true
    would give it one), or no training text; validation and test may be absent."""
    where = f"data.path: {data.path!r}: " if data.path else f"data.source={data.source}: "
    for split in SPLITS:
        tally = layout.splits[split]
        if rows[split] or (not tally.characters and split != "train"):
            continue
        if not tally.characters:
            raise DataError(f"{where}the train split has no text ({_documents(layout.documents)}, "
                            f"{_characters(layout.characters)} in all): {_train_fix(layout)}")
        unit = "characters" if data.tokenizer == "char" else "tokens"
        why = (f"{where}the text is too short for data.seq_len={data.seq_len}: the {split} "
               f"split has no sequence ({tally.characters:,} characters in {tally.documents:,} "
               f"document{'s' if tally.documents != 1 else ''})")
        if not data.pack and packable[split]:
            raise DataError(f"{why}: {_pieces(layout, split)} {data.seq_len} {unit} and rows "
                            f"never cross documents; set data.pack=true to join the documents "
                            f"of a split into rows, or a smaller data.seq_len")
        raise DataError(f"{why}: fewer {unit} than one row; set a smaller data.seq_len, or "
                        f"give the {split} split more text")


def _pieces(layout: Layout, split: str) -> str:
    """What is shorter than a row where a split has none: each whole document, or (split by
    position, fewer than WORK_PERIOD documents of no split of their own) each one's part."""
    if layout.documents >= WORK_PERIOD or layout.given == layout.documents:
        return "each document is shorter than a row of"
    a, b = {"train": (0.0, POSITION_CUTS[0]), "validation": POSITION_CUTS,
            "test": (POSITION_CUTS[1], 1.0)}[split]
    return (f"with fewer than {WORK_PERIOD} documents each is split by position, and each "
            f"one's {split} part (its characters {a:.0%} to {b:.0%}) is shorter than a row of")


def _train_fix(layout: Layout) -> str:
    """What gives the train split text: the documents' own splits when some have one, else
    more text than the split by work or by position leaves it."""
    if layout.given:
        return "give documents split 'train', or leave their split out"
    if layout.documents >= WORK_PERIOD:
        return (f"split by work, the {VALIDATION_AT + 1}th and {TEST_AT + 1}th of every "
                f"{WORK_PERIOD} documents are held out and the others are empty; give them "
                f"text")
    return (f"split by position, the first {POSITION_CUTS[0]:.0%} of each document's "
            f"characters train, none here; give the documents more text")


def warn_dropped(label: str, counts: dict[str, list[int]], layout: Layout,
                 data: DataConfig) -> None:
    """One warning when rows within documents drop more than DROP_WARN of a split's (or
    the whole corpus's) text in tails; ``counts[split]`` = [read, kept] characters or
    tokens."""
    read = sum(r for r, _ in counts.values())
    shares = {s: 1 - k / r for s, (r, k) in counts.items() if r}
    overall = 1 - sum(k for _, k in counts.values()) / read if read else 0.0
    if data.pack or max([overall, *shares.values()]) <= DROP_WARN:
        return
    unit = "characters" if data.tokenizer == "char" else "tokens"
    fix = ("set data.pack=true to join the documents of a split into rows"
           if any(t.documents > 1 for t in layout.splits.values())
           else "a smaller data.seq_len drops less")  # one document per split: pack is moot
    log.warning("%s: %.0f%% of the %s (%s) fall in document tails shorter than a row of "
                "data.seq_len=%d and are dropped; %s", label, 100 * overall, unit,
                ", ".join(f"{s} {100 * v:.0f}%" for s, v in shares.items()), data.seq_len,
                fix)
