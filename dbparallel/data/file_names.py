"""What a data file's name says it holds: text, JSON Lines or Parquet, compressed or not. A
compression suffix (``COMPRESSION``) is taken off first; ``.txt`` and any other name is text."""

from __future__ import annotations

from pathlib import PurePosixPath

from dbparallel.errors import DataError

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")  # .json too: read as one object per line
PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")
# compressed files are read through their codec (suffix -> pyarrow codec)
COMPRESSION = {".gz": "gzip", ".bz2": "bz2", ".lz4": "lz4", ".zst": "zstd"}
UNREAD_COMPRESSION = {".xz": "xz -d", ".lzma": "xz -d", ".br": "brotli -d"}  # no codec here


def uncompressed(path: str) -> tuple[str, str | None]:
    """(``path`` without its compression suffix, the codec or None)."""
    suffix = PurePosixPath(path).suffix.lower()
    if suffix in COMPRESSION:
        return path[:-len(suffix)], COMPRESSION[suffix]
    return path, None


def text_file_name(name: str) -> bool:
    """Whether a file's name says it holds text: ``.txt`` or JSONL, compressed or not (also
    as a compression not read here, which ``file_format`` then names)."""
    name = uncompressed(name)[0].lower()
    if PurePosixPath(name).suffix in UNREAD_COMPRESSION:
        name = name[:name.rindex(".")]
    return name.endswith((".txt", *JSONL_SUFFIXES))


def file_format(path: str) -> str:
    """``text``, ``jsonl`` or ``parquet``, by the name of the file at ``path``."""
    name, codec = uncompressed(path)
    name = name.lower()
    if (suffix := PurePosixPath(name).suffix) in UNREAD_COMPRESSION:
        read = ", ".join(COMPRESSION)
        raise DataError(f"data.path: {path!r} is compressed as {suffix}, which is not read "
                        f"here (only {read}, decompressed as they are read): decompress it "
                        f"({UNREAD_COMPRESSION[suffix]} FILE), or compress it as one of those")
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(PARQUET_SUFFIXES):
        if codec is not None:
            raise DataError(f"data.path: {path!r} is a compressed Parquet file; Parquet "
                            f"compresses its own pages: decompress it")
        return "parquet"
    return "text"
