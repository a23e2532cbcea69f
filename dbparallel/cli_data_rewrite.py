"""``data reshard`` (rewrite an image data set in row groups of data.shard_rows rows), and what
it shares with ``data encode`` (cli_data_encode.py): the data a rewrite reads, and the rows it
wrote."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from dbparallel.config import Config
from dbparallel.errors import UserError
from dbparallel.shell import shell_path

if TYPE_CHECKING:
    from dbparallel.data.parquet_out import Resharded
    from dbparallel.data.shards import DataIndex
    from dbparallel.runtime.rewrite_ray import ClusterRewrite
    from dbparallel.training.progress import Progress

Written = tuple["Resharded", list[object]]  # what was written, and each part's rewrite stats


def rewritten_data(cfg: Config, out: str, action: str, shown: str = "") -> DataIndex:
    """The image data ``data reshard`` or ``data encode`` (``action``) rewrites into ``out``
    (named as ``shown``; default ``--out OUT``); UserError where there is no --out, it is
    not a new or empty folder or lies inside data.path, or the data are text."""
    from pathlib import Path

    from dbparallel.data.parquet_out import check_out
    from dbparallel.data.reshard import NOT_TEXT
    from dbparallel.data.sources import holds_text, open_data

    if not out:
        raise UserError(f"data {action}: --out FOLDER is required (a new or empty folder)")
    shown = shown or f"--out {out}"
    if holds_text(cfg.data):  # before a corpus is tokenized for nothing
        where = cfg.data.path or f"data.source={cfg.data.source}"
        raise UserError(f"{where}: {NOT_TEXT}")
    if "://" not in out and cfg.data.path and "://" not in cfg.data.path and \
            Path(out).resolve().is_relative_to(Path(cfg.data.path).resolve()):
        raise UserError(f"{shown}: inside data.path {cfg.data.path}; the new files would "
                        f"become part of the data set they are written from")
    check_out(out, shown)  # before the data are indexed
    return open_data(cfg.data)


def rewrite(cfg: Config, index: DataIndex, out: str, desc: str, here: Callable[[], Written],
            cluster: Callable[[], ClusterRewrite], progress: bool | None = None,
            joined: bool = False) -> Written:
    """The rewrite ``here``, in this process; with runtime.address or RAY_ADDRESS set, or
    (``joined``: a program's call) in a process that joined a Ray instance, as ``cluster``
    says, one Ray task per file on that cluster (data every node reads alike: not built into
    this machine's cache, nor named by a relative path). ``progress``: a bar, or (False) a
    line every 15 s (default: a bar where stderr is a terminal)."""
    ray = sys.modules.get("ray")  # looked up, not imported: a program that called ray.init
    joined = joined and ray is not None and ray.is_initialized()
    if not (joined or cfg.runtime.address or os.environ.get("RAY_ADDRESS")):
        return here()
    from dbparallel.training.data_check import readable_anywhere

    if not readable_anywhere(index):
        print(f"data {desc}: only this machine reads these data (built into its cache, or "
              f"named by a relative path): they are rewritten here, not on the cluster",
              file=sys.stderr)
        return here()
    from dbparallel.runtime.rewrite_ray import rewrite_joined

    out = out if "://" in out else os.path.abspath(out)  # the same folder on every node
    return rewrite_joined(cfg, index, out, cluster(), progress, desc)


def rows_progress(index: DataIndex, desc: str, progress: bool | None = None) -> Progress:
    """The progress of a rewrite of every row of ``index``: a bar, or (``progress`` False) a
    line every 15 s, as in a job's log (default: a bar where stderr is a terminal)."""
    from dbparallel.training.progress import Progress

    return Progress(sum(index.num_rows(s) for s in index.present()), desc, "rows",
                    tty=progress)


def written_rows(out: str, done: Resharded, shard_rows: int) -> None:
    """Print each split's rows and row groups as ``out`` now holds them; RuntimeError where
    they are not the rows ``done`` says were read."""
    from dbparallel.data.parquet_index import parquet_index

    written = parquet_index(out)
    for split, rows in done.rows.items():
        if written.num_rows(split) != rows:
            raise RuntimeError(f"{out} has {written.num_rows(split)} {split} rows, {rows} "
                               f"were read")
        groups = len(written.shards(split))
        print(f"{split}: {rows:,} rows in {groups:,} row group{'s' if groups != 1 else ''} of "
              f"at most {shard_rows:,} rows")


def reshard_command(cfg: Config, out: str) -> int:
    """``data reshard``: rewrite an image data set in row groups of data.shard_rows rows."""
    from dbparallel.data.reshard import reshard, resizes

    index = rewritten_data(cfg, out, "reshard")
    resized = resizes(index, cfg.data)
    if cfg.data.resize and not resized:
        print("data.resize: the images are pixel lists of one size already; they are copied "
              "as they are", file=sys.stderr)
    resize = cfg.data if resized else None

    def cluster() -> ClusterRewrite:
        from dbparallel.data.reshard import resize_rewrite
        from dbparallel.runtime.rewrite_ray import ClusterRewrite

        return ClusterRewrite(partial(resize_rewrite, resize))

    def here() -> Written:
        with rows_progress(index, "reshard") as bar:
            return reshard(index, out, cfg.data.shard_rows, bar, resize), []

    done, _ = rewrite(cfg, index, out, "reshard", here, cluster)
    written_rows(out, done, cfg.data.shard_rows)
    files = f"{len(done.files)} file" + ("s" if len(done.files) != 1 else "")
    if resized:
        s, mode = cfg.data.image_size, "grey" if cfg.data.channels == 1 else "RGB"
        print(f"wrote {files} to {out}; every image was turned upright, cut square and "
              f"resized to {s}x{s} {mode} PNG: train on them with data.source=parquet "
              f"data.path={shell_path(out)} data.image_size={s} "
              f"data.channels={cfg.data.channels}{_changed(cfg, ('num_classes',))} (no "
              f"data.resize needed)")
        return 0
    d = cfg.data
    latents = (f" data.latents=true data.channels={d.channels} data.image_size={d.image_size}"
               f" data.latent_scale={d.latent_scale:g} data.latent_shift={d.latent_shift:g}"
               if d.latents else "")
    kept = ("num_classes", "pixel_order") if d.latents else \
        ("image_size", "channels", "num_classes", "pixel_order")
    print(f"wrote {files} to {out}; train on them with "
          f"data.source=parquet data.path={shell_path(out)}{latents}{_changed(cfg, kept)}")
    print(f"the rows were copied as they are, not decoded: `dbparallel data check "
          f"{shell_path(out)}`, with the same data settings, checks every one")
    return 0


def _changed(cfg: Config, keys: tuple[str, ...]) -> str:
    """`` data.KEY=VALUE`` for each of ``keys`` whose value is not its default: the images'
    settings that the rewritten data are read with, as they were."""
    from dbparallel.config import DataConfig

    default = DataConfig()
    return "".join(f" data.{k}={getattr(cfg.data, k)}" for k in keys
                   if getattr(cfg.data, k) != getattr(default, k))
