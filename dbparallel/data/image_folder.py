"""The index of a folder of images, one sub-folder per class (torchvision's ImageFolder layout).

``data.path/<class>/<image>`` (every image trains), or with split folders
``data.path/train/<class>/<image>``, ``data.path/test/<class>/...`` (and optionally
``validation``; aliases such as ``val``, ``dev``, ``testing`` name the same splits). Class ids
are the positions of the training class folders' names sorted as text, so folders ``0``..``10``
are labelled ``0 1 10 2 3 ...`` -> 0, 1, 2, 3, 4, ... (folder ``2`` is label 3); the index keeps
the names (``meta["classes"]``) and ``dbparallel predict`` prints them. Images may sit deeper
inside their class folder. Image files are found by extension; other files and
hidden files or folders (``.name``) are left out. Only the listing is read, never the images,
so indexing costs one listing of the folder, local or in an object store.

Shards hold ``data.shard_rows`` files. A block shuffles rows only within a window of shards,
so the files of a split are put in a fixed pseudo-random order (sorted by a hash of their path)
before they are cut into shards: every shard mixes the classes, whatever the listing order.
"""

from __future__ import annotations

import hashlib
import json
import logging
import unicodedata

import pyarrow as pa
import pyarrow.fs as pafs

from dbparallel.config import DataConfig
from dbparallel.data.images import IMAGE_EXTENSIONS, OTHER_IMAGE_EXTENSIONS
from dbparallel.data.shards import SPLIT_NAMES, SPLITS, DataIndex, Shard, split_of_name
from dbparallel.data.tables import resolve_path
from dbparallel.errors import DataError, OtherData

VERSION = 1  # bump when the index layout changes
log = logging.getLogger(__name__)

Entries = list[tuple[list[str], pafs.FileInfo]]  # (path parts relative to a folder, info)


def image_folder_index(data: DataConfig, classes: list[str] | None = None) -> DataIndex:
    """The DataIndex of the image folder at ``data.path``; DataError naming the folder (or
    data.num_classes) when its layout cannot be used. ``classes``, a trained network's class
    names by label, labels the folders by name instead of by their own sorted names (a folder
    with a class fewer or more would shift every label after it); a folder of another name
    is refused."""
    path = data.path
    fs, root = resolve_path(path)
    entries = _list(fs, root, path)
    folders = {split: (uri, _class_files(found, uri))
               for split, (uri, found) in _split_folders(entries, path).items()}
    among = "the network's classes" if classes else "the training classes"
    classes = list(classes) if classes else sorted(folders["train"][1])
    if len(classes) > data.num_classes:
        raise DataError(f"data.num_classes: {data.num_classes}, but {path} has "
                        f"{len(classes)} class folders ({listed(classes)})")
    # by the names' NFC form too: macOS writes 'é' as 'e' and a combining accent (NFD), so a
    # folder made there and its twin made elsewhere are one class
    ids = {**{_nfc(name): i for i, name in enumerate(classes)},
           **{name: i for i, name in enumerate(classes)}}
    splits = {}
    for split, (uri, by_class) in folders.items():
        unknown = sorted(c for c in by_class if c not in ids and _nfc(c) not in ids)
        if unknown:
            raise DataError(f"{_child_uri(uri, unknown[0])}: class folder {unknown[0]!r} is "
                            f"not among {among} ({listed(classes)})")
        files = sorted((f, ids.get(c, ids.get(_nfc(c)))) for c, names in by_class.items()
                       for f in names)
        files.sort(key=lambda fl: hashlib.sha256(fl[0].encode()).digest())  # mixes classes
        splits[split] = _shards(uri, files, data.shard_rows)
    _warn_other_images(entries, path)
    stat = sorted(["/".join(parts), e.size, e.mtime_ns] for parts, e in entries if _is_image(e))
    meta = {"encoding": "encoded", "classes": classes, "files": len(stat),
            "stat": hashlib.sha256(json.dumps(stat).encode()).hexdigest()[:20],
            "version": VERSION}
    return DataIndex("images", path, splits, meta)


def _nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def _is_image(entry: pafs.FileInfo) -> bool:
    return entry.type == pafs.FileType.File and entry.base_name.lower().endswith(
        IMAGE_EXTENSIONS)


def _warn_other_images(entries: Entries, path: str) -> None:
    """A warning naming image files of a format not read (``.tif``, ``.heic``, ...): left
    out like any other file, they would otherwise be missing from the data without a word."""
    other = sorted("/".join(parts) for parts, e in entries if e.type == pafs.FileType.File
                   and e.base_name.lower().endswith(OTHER_IMAGE_EXTENSIONS))
    if other:
        kinds = sorted({name.rsplit(".", 1)[-1].lower() for name in other})
        log.warning("%s: %d image file%s of a format not read (%s) left out: %s; convert "
                    "them to one of %s", path, len(other), "s" if len(other) > 1 else "",
                    ", ".join(f".{k}" for k in kinds), listed(other, 3),
                    " ".join(IMAGE_EXTENSIONS))


def _list(fs: pafs.FileSystem, root: str, path: str) -> Entries:
    """Every entry under ``root`` as (path parts relative to root, info), hidden ones left
    out."""
    try:
        info = fs.get_file_info(root)
        if info.type == pafs.FileType.NotFound:
            raise DataError(f"data.path: no such folder: {path!r}")
        if info.type != pafs.FileType.Directory:
            raise OtherData(f"data.path: {path!r} is a file; data.source=image_folder needs "
                            f"a folder of class folders", f"{path!r} is a file, not a folder")
        found = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"data.path: cannot list {path!r}: {err}") from None
    base = root.rstrip("/")
    entries = []
    for entry in found:
        parts = entry.path[len(base):].strip("/").split("/")
        if not any(p.startswith(".") for p in parts):
            entries.append((parts, entry))
    if isinstance(fs, pafs.LocalFileSystem):
        entries = _without_loops(entries, path)
        _warn_broken_links(root, entries, path)
    return entries


def _warn_broken_links(root: str, entries: Entries, path: str) -> None:
    """A warning naming the links of a local folder that lead to nothing (their target moved
    or deleted): the listing leaves them out without a word, and they are data gone missing,
    an image or a whole class folder (whose loss would shift the labels of the classes
    after it)."""
    import os

    broken = []
    for parts, folder in [([], None), *((p, e) for p, e in entries
                                        if e.type == pafs.FileType.Directory)]:
        where = folder.path if folder is not None else root
        with os.scandir(where) as found:
            broken += ["/".join([*parts, f.name]) for f in found if not f.name.startswith(".")
                       and f.is_symlink() and not os.path.exists(f.path)]
    if broken:
        broken.sort()
        many = len(broken) > 1
        log.warning("%s: %d link%s to nothing left out (%s target moved or deleted?): %s",
                    path, len(broken), "s" * many, "their" if many else "its",
                    listed(broken, 3))


def files_under(path: str) -> list[str]:
    """Every file under the folder ``path``, sorted, as an image folder's listing finds it
    (``predict`` reads a folder so): hidden files and folders left out, links followed but
    not one back to a folder above."""
    fs, root = resolve_path(path)
    return sorted(e.path for _, e in _list(fs, root, path) if e.type == pafs.FileType.File)


def _without_loops(entries: Entries, path: str) -> Entries:
    """``entries`` of a local folder without what lies under a link to a folder that holds it
    (``cat/deeper/up -> ..``): the listing follows links, so each image above it would come
    again at every level, many times over and under another class folder. A warning names the
    links; links to folders elsewhere are followed as any folder is."""
    import os

    loops = []
    for parts, entry in entries:
        if entry.type == pafs.FileType.Directory and os.path.islink(entry.path):
            target = os.path.realpath(entry.path)
            above = os.path.realpath(os.path.dirname(entry.path))
            if above == target or above.startswith(target.rstrip(os.sep) + os.sep):
                loops.append(parts)
    if not loops:
        return entries
    loops.sort(key=len)
    loops = [p for i, p in enumerate(loops) if not any(p[:len(q)] == q for q in loops[:i])]
    many = len(loops) > 1
    log.warning("%s: %s back to a folder above %s, not followed (the images there are read "
                "once): %s", path, f"{len(loops)} links lead" if many else "a link leads",
                "them" if many else "it", listed(sorted("/".join(p) for p in loops), 3))
    return [(parts, e) for parts, e in entries
            if not any(parts[:len(p)] == p for p in loops)]


def _split_folders(entries: Entries, path: str) -> dict[str, tuple[str, Entries]]:
    """Split -> (its folder, its entries relative to that folder); without split folders,
    every entry trains. A split folder is named after its split or an alias of it
    (data/shards.py's SPLIT_NAMES: ``val``, ``testing``, ...)."""
    top = {parts[0] for parts, e in entries if len(parts) > 1 or e.type == pafs.FileType.Directory}
    named = {name: split_of_name(name) for name in sorted(top) if split_of_name(name)}
    if not named:
        return {"train": (_child_uri(path, ""), entries)}
    by_split: dict[str, str] = {}
    for name, split in named.items():
        if split in by_split:
            raise DataError(f"{_child_uri(path, name)}: a second {split!r} folder beside "
                            f"{by_split[split]!r}; keep one folder per split")
        by_split[split] = name
    # a class folder may happen to bear a split's name (a class 'test'): say how it was read
    read_as = ", ".join(f"{n}/ as {s!r}" if n != s else f"{n}/" for n, s in named.items())
    fix = ("split folders hold class folders (data.path/<split>/<class>/); a class of a "
           "split's name goes in train/<class>/ and test/<class>/, or takes another name")
    if "train" not in by_split:
        raise DataError(f"data.path: {path} has split folders ({read_as}) but no 'train' "
                        f"folder; {fix}")
    other = sorted(top - set(named))
    loose = sorted(parts[0] for parts, e in entries if len(parts) == 1 and _is_image(e))
    if other or loose:
        raise DataError(f"{_child_uri(path, (other or loose)[0])}: not a split folder, beside "
                        f"split folders ({read_as}): with split folders every folder of "
                        f"data.path is one ({', '.join(SPLIT_NAMES)}); {fix}")
    return {split: (_child_uri(path, name), [(parts[1:], e) for parts, e in entries
                                             if parts[0] == name and len(parts) > 1])
            for split in SPLITS if split in by_split for name in [by_split[split]]}


def _class_files(entries: Entries, where: str) -> dict[str, list[str]]:
    """Class folder name -> its image files (paths relative to ``where``)."""
    by_class: dict[str, list[str]] = {}
    for parts, e in entries:
        if e.type == pafs.FileType.Directory and len(parts) == 1:
            by_class.setdefault(parts[0], [])
        elif _is_image(e):
            if len(parts) == 1:
                raise DataError(f"{_child_uri(where, parts[0])}: an image outside any class "
                                f"folder; images go in {where.rstrip('/')}/<class>/")
            by_class.setdefault(parts[0], []).append("/".join(parts))
    if not any(by_class.values()):
        raise DataError(f"{where}: no class folders with image files "
                        f"({' '.join(IMAGE_EXTENSIONS)})")
    empty = sorted(c for c, files in by_class.items() if not files)
    if empty:
        raise DataError(f"{_child_uri(where, empty[0])}: class folder without image files "
                        f"({' '.join(IMAGE_EXTENSIONS)})")
    return by_class


def _shards(uri: str, files: list[tuple[str, int]], shard_rows: int) -> tuple[Shard, ...]:
    return tuple(
        Shard("files", uri, len(chunk), first_row=start,
              files=tuple(f for f, _ in chunk), labels=tuple(label for _, label in chunk))
        for start in range(0, len(files), shard_rows)
        for chunk in [files[start:start + shard_rows]])


def _child_uri(path: str, name: str) -> str:
    """``path/name`` for a local path or a URI (before its query, e.g. an S3 endpoint);
    ``path`` without a trailing slash when ``name`` is empty."""
    head, sep, query = path.partition("?") if "://" in path else (path, "", "")
    head = head.rstrip("/") or head
    return f"{head}/{name}{sep}{query}" if name else f"{head}{sep}{query}"


def listed(names: list[str], shown: int = 10) -> str:
    """Up to ``shown`` names, comma-separated, and how many more."""
    more = f", ... {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
