"""A run directory on a local disk or in an object store, with atomic writes.

Local: temp file, fsync, rename, fsync of the directory, so a reader sees the old file or
the new one, never a torn one. Object stores (``s3://``, ``gs://``, ... through
``pyarrow.fs``) write whole objects; readers are protected by checksums in the manifests,
which are written after the files they list.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from dbparallel.errors import RunDirError, UserError

READ_TRIES = 5  # reads of an object rewritten as it is read, before the last one is taken


class Storage:
    """Files under one root, addressed by relative paths with '/' separators."""

    def __init__(self, root: str):
        self.root = root.rstrip("/") or "/"
        self.is_local = "://" not in root or root.startswith("file://")
        if self.is_local:
            self._base = root[len("file://"):] if root.startswith("file://") else root
            self.fs: pafs.FileSystem = pafs.LocalFileSystem()
        else:
            self.fs, self._base = pafs.FileSystem.from_uri(root)

    def path(self, rel: str) -> str:
        return f"{self._base.rstrip('/')}/{rel}" if rel else self._base

    def uri(self, rel: str = "") -> str:
        """A printable location of ``rel``; a URI's query (``?endpoint_override=...``) stays
        at its end, where it is read back."""
        if self.is_local:
            return self.path(rel)
        root, sep, query = self.root.partition("?")
        return f"{root.rstrip('/')}/{rel}".rstrip("/") + sep + query

    def makedirs(self, rel: str = "") -> None:
        self.fs.create_dir(self.path(rel), recursive=True)

    def exists(self, rel: str) -> bool:
        return self.fs.get_file_info(self.path(rel)).type != pafs.FileType.NotFound

    def modified(self, rel: str) -> float | None:
        """Unix time ``rel`` was last written (None where the store does not say)."""
        mtime = self.fs.get_file_info(self.path(rel)).mtime
        return mtime.timestamp() if mtime is not None else None

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write ``data`` to ``rel`` atomically."""
        target = self.path(rel)
        parent = target.rsplit("/", 1)[0]
        if self.is_local:
            tmp = _temp_beside(target, data)
            try:
                os.replace(tmp, target)
            except BaseException:  # a failed write leaves no temp file behind
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            _sync_dir(parent)
            return
        self.fs.create_dir(parent, recursive=True)
        with self.fs.open_output_stream(target) as f:
            f.write(data)

    def create_bytes(self, rel: str, data: bytes) -> bool:
        """Write ``data`` to ``rel`` where nothing is there yet; False, leaving it as it is,
        where something is. Local: atomic and exclusive, a complete temp file linked into
        place (where the filesystem has no hard links, a check and then a rename). An object
        store has no conditional write through ``pyarrow.fs``: a check, then the write, so
        two writers at the same instant may both write, and the later one's is kept."""
        if not self.is_local:
            if self.exists(rel):
                return False
            self.write_bytes(rel, data)
            return True
        target = self.path(rel)
        tmp = _temp_beside(target, data)
        try:
            try:
                os.link(tmp, target)
            except FileExistsError:
                return False
            except OSError:  # no hard links here (some FUSE mounts)
                if os.path.exists(target):
                    return False
                os.replace(tmp, target)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        _sync_dir(target.rsplit("/", 1)[0])
        return True

    def read_bytes(self, rel: str) -> bytes:
        """The whole file ``rel``. In an object store, read again where the object's size is
        not the size read: pyarrow.fs learns an object's size first and then reads that many
        bytes, so an object rewritten in between (a lease or record renewed by its process)
        came back cut short or running into the next version. So is one whose response broke
        off (an OSError naming neither a missing object nor a refusal: a connection dropped,
        or a stream the store cut as the object was rewritten), up to READ_TRIES reads. An
        object rewritten twice in between, back to a version of the size read, passes the
        check; read_json reads those again too."""
        path = self.path(rel)
        try:
            for attempt in range(READ_TRIES):
                try:
                    with self.fs.open_input_stream(path) as f:
                        data = f.read()
                except (FileNotFoundError, PermissionError, pa.ArrowException):
                    raise
                except OSError:
                    if self.is_local or attempt == READ_TRIES - 1:
                        raise
                    continue
                if self.is_local or self.fs.get_file_info(path).size == len(data):
                    break
            return data
        except (FileNotFoundError, pa.ArrowException) as err:
            raise FileNotFoundError(f"{self.uri(rel)}: {err}") from None

    def listdir(self, rel: str) -> list[str]:
        """Names of the entries directly under ``rel`` (none if it does not exist). Local:
        the names alone (pyarrow's listing also reads each entry, and another process's
        writes beside it made that fail with "Cannot list directory", as two replicas of a
        block start); a folder gone as it is listed holds none."""
        if self.is_local:
            try:
                return sorted(os.listdir(self.path(rel)))
            except (FileNotFoundError, NotADirectoryError):
                return []
        selector = pafs.FileSelector(self.path(rel), allow_not_found=True)
        try:
            return sorted(info.base_name for info in self.fs.get_file_info(selector))
        except FileNotFoundError:
            return []

    def delete(self, rel: str) -> None:
        """Remove the file ``rel``; nothing where it is gone, also where another process
        removed it between this one's look and its delete."""
        if self.exists(rel):
            try:
                self.fs.delete_file(self.path(rel))
            except FileNotFoundError:
                pass

    def remove_empty_dir(self, rel: str = "") -> None:
        """Remove the folder ``rel`` where it holds no file. Local: an empty folder, at once
        (a file written in it meanwhile keeps it). An object store has folders only as empty
        marker objects, which pyarrow.fs writes for a folder made and for the folder of a
        file written, or deleted last in it (so that the folder stays), and deletes only with
        what is under them: where ``rel`` holds no file, its markers are deleted, and with
        them a file written there at that instant (its process writes it again, as a process
        does its record: process_record.py)."""
        if self.is_local:
            with contextlib.suppress(OSError):
                os.rmdir(self.path(rel))
            return
        with contextlib.suppress(OSError, pa.ArrowException):
            if self.exists(rel) and not self._holds_file(self.path(rel)):
                self.fs.delete_dir(self.path(rel))

    def _holds_file(self, path: str) -> bool:
        """Whether the object store's folder ``path`` holds a file, at any depth (read
        folder by folder: a run directory says so from its first listing)."""
        selector = pafs.FileSelector(path, allow_not_found=True)
        return any(info.type != pafs.FileType.Directory or self._holds_file(info.path)
                   for info in self.fs.get_file_info(selector))

    def write_json(self, rel: str, value: Any) -> None:
        self.write_bytes(rel, (json.dumps(value, indent=2, sort_keys=False) + "\n").encode())

    def read_json(self, rel: str) -> Any:
        """The JSON value of ``rel``; RunDirError naming the file when it is not JSON.

        An object store's read is a prefix of one version of the object. ``read_bytes``
        reads again where the object's size then is not the size read, but an object
        rewritten twice meanwhile (back to a version of that size) passes that check. The
        text of a JSON object or array cut short does not parse, so text that does not
        parse is read again, up to READ_TRIES reads, before it is called damaged."""
        tries = 1 if self.is_local else READ_TRIES
        while True:
            tries -= 1
            try:
                return json.loads(self.read_bytes(rel))
            except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
                if not tries:
                    raise damaged(self.uri(rel), err) from None

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode())

    def read_text(self, rel: str) -> str:
        """The UTF-8 text of ``rel``; RunDirError naming the file when it is not UTF-8."""
        data = self.read_bytes(rel)
        try:
            return data.decode()
        except UnicodeDecodeError as err:
            raise damaged(self.uri(rel), err) from None


def reach(root: str, shown: str = "") -> Storage:
    """The Storage of ``root`` once its store has answered: RunDirError naming ``shown``
    (default ``root``) where it cannot be reached (no server at the endpoint, a bucket whose
    region cannot be resolved, no credentials), the first thing a command reads of a run
    directory, instead of the traceback of the first read."""
    return reached(root, shown)[0]


def reached(root: str, shown: str = "") -> tuple[Storage, pafs.FileInfo]:
    """``reach``, with what its store answered of ``root`` itself (a directory, a file, or
    nothing there)."""
    try:
        storage = Storage(root)
        return storage, storage.fs.get_file_info(storage.path(""))
    except (pa.ArrowException, OSError) as err:
        raise RunDirError(f"{shown or root}: cannot be reached: {err}") from None


def split_uri(path: str) -> tuple[str, str]:
    """(directory, file name) of a local path or URI; a URI's query (``?endpoint_override=``)
    stays with the directory, where the filesystem is made."""
    path, query = path.split("?", 1) if "://" in path and "?" in path else (path, "")
    head, name = posixpath.split(path.rstrip("/"))
    return (head or ".") + (f"?{query}" if query else ""), name


def write_file(out: str, data: bytes, shown: str = "--out") -> None:
    """Write ``data`` to the file ``out``, a local path or a URI (``s3://bucket/x.png``, with
    its query); UserError naming ``shown`` and ``out`` where it cannot be written."""
    try:
        if "://" not in out or out.startswith("file://"):
            with open(out.removeprefix("file://"), "wb") as f:
                f.write(data)
            return
        folder, name = split_uri(out)
        reach(folder, f"{shown} {out}").write_bytes(name, data)
    except OSError as err:
        raise UserError(f"{shown} {out}: cannot write it ({err.strerror or err})") from None


RESTORE = "restore it from a copy, or start the run in a new run.dir"  # what most files need


class DamagedFile(RunDirError):
    """A run directory's file that cannot be read as what it should hold."""

    def __init__(self, where: str, why: object, remedy: str = RESTORE):
        super().__init__(f"{where}: damaged, not readable ({why}); {remedy}")
        self.where, self.why, self.remedy = where, str(why), remedy

    def __reduce__(self) -> tuple[type, tuple[str, str, str]]:
        # a block's Ray actor sends its error to the driver pickled; unpickling calls the
        # class with its arguments, which are not the message
        return type(self), (self.where, self.why, self.remedy)


def damaged(where: str, why: object, remedy: str = RESTORE) -> DamagedFile:
    """The error for a run directory's file ``where`` that cannot be read: ``why``, and what
    to do about it."""
    return DamagedFile(where, why, remedy)


def _temp_beside(target: str, data: bytes) -> str:
    """A new file beside the local path ``target`` (its folder made where missing) holding
    ``data``, flushed to the disk: its path. Nothing is left where the write fails; an
    OSError that names no file (a full disk) names ``target``."""
    os.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
    tmp = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError) and not err.filename:
            err.filename = target
        raise
    return tmp


def _sync_dir(folder: str) -> None:
    """Flush the local ``folder``'s entries (a file renamed or linked into it) to the disk."""
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
