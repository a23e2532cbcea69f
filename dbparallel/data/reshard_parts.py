"""A rewrite of an image data set cut into parts that write one file each, for a cluster.

``reshard`` (data/reshard.py) writes every split in one pass, file after file. The same files
can be written apart: the ``n``-th file of a split holds its rows from ``n`` x
``GROUPS_PER_FILE`` x ``shard_rows`` on, in row groups of ``shard_rows``, whoever writes it.
A ``Part`` is one such file; ``write_part`` writes it alone (runtime/rewrite_ray.py runs
parts as Ray tasks, on the cluster's CPUs or GPUs), and the files it writes are those the
single pass writes, row group for row group. A part that meets a bad row writes nothing more
and only decodes the rest of its rows, to name its bad rows, and removes its file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow.fs as pafs

from dbparallel.data.decoded_pieces import decoded_pieces
from dbparallel.data.parquet_out import GROUPS_PER_FILE, Resharded, Writer, remove_written
from dbparallel.data.reshard import COLUMNS, Rewrite, check_of, copied
from dbparallel.data.shards import DataIndex
from dbparallel.data.tables import resolve_path
from dbparallel.errors import MAX_BAD_ROWS


@dataclass(frozen=True)
class Part:
    """The ``number``-th file of ``split``: its rows [``start``, ``stop``)."""

    split: str
    number: int
    start: int
    stop: int

    @property
    def name(self) -> str:
        return f"{self.split}-{self.number:05d}.parquet"

    @property
    def rows(self) -> int:
        return self.stop - self.start


@dataclass
class PartDone:
    """What ``write_part`` did: the part's ``file`` (None once a bad row was met), its row
    groups, the bad rows it named (in row order), and what its rewrite kept of the rows
    (``stats``: data encode's LatentStats; None for others)."""

    part: Part
    file: str | None = None
    row_groups: int = 0
    bad: list[str] = field(default_factory=list)
    stats: object = None


def parts_of(index: DataIndex, shard_rows: int) -> list[Part]:
    """Every split's files, in index order: ``GROUPS_PER_FILE`` row groups of ``shard_rows``
    rows to a file (the split's last may hold fewer)."""
    per_file = GROUPS_PER_FILE * shard_rows
    parts = []
    for split in index.present():
        total = index.num_rows(split)
        parts += [Part(split, n, start, min(start + per_file, total))
                  for n, start in enumerate(range(0, total, per_file))]
    return parts


def write_part(index: DataIndex, part: Part, out: str, shard_rows: int,
               rewrite: Rewrite | None, metadata: dict[bytes, bytes],
               ahead: bool = True, write: bool = True) -> PartDone:
    """Write ``part`` of ``index`` into ``out`` (made and checked empty by the caller), its
    rows as ``rewrite`` gives them back (None: as they are); ``metadata`` goes into the
    file's footer. At a bad row it stops writing, names the part's bad rows (up to
    MAX_BAD_ROWS) and removes its file; any other error removes it too, and is raised.
    Without ``write`` (a bad row was met elsewhere) it only names the part's bad rows, as
    ``rewrite.check`` decodes them."""
    fs, root = resolve_path(out)
    wrote = Resharded()
    writer = Writer(fs, root, part.split, shard_rows, metadata, wrote,
                    first_file=part.number)
    done = PartDone(part)
    try:
        for piece, decoded in decoded_pieces(index, part.split, COLUMNS,
                                             check_of(rewrite),
                                             ahead, part.start, part.stop):
            done.bad += copied(writer, rewrite, piece, decoded, MAX_BAD_ROWS - len(done.bad),
                               write=write and not done.bad)
            if len(done.bad) >= MAX_BAD_ROWS:
                break
        if done.bad or not write:
            writer.abandon()
            remove_written(fs, root, wrote.files, created=False)
            return done
        writer.close()
    except BaseException:
        writer.abandon()
        remove_written(fs, root, wrote.files, created=False)
        raise
    if wrote.files != [part.name]:  # the part's rows make one file of that name
        raise RuntimeError(f"{part}: wrote {wrote.files}")
    done.file, done.row_groups = part.name, wrote.row_groups
    done.stats = getattr(rewrite, "stats", None)
    return done


def visible(out: str, name: str) -> bool:
    """Whether this machine sees the file ``name`` in ``out`` (a part written on another
    node into a folder that is not shared is not)."""
    fs, root = resolve_path(out)
    return fs.get_file_info(f"{root.rstrip('/')}/{name}").type == pafs.FileType.File
