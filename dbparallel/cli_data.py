"""The data commands: ``data check`` (index and decode every row once, as training would),
``data reshard`` (rewrite image data in row groups of data.shard_rows rows,
cli_data_rewrite.py) and ``data encode`` (cli_data_encode.py); and how the command line's
config items split into recipe files, data paths and overrides."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from dbparallel.config import TEXT_TASKS, Config, given_value, load_config
from dbparallel.errors import DataError, UserError


def split_items(items: Sequence[str]) -> tuple[list[str], list[str]]:
    """(recipe files, key=value overrides) of the command line's config items."""
    files = [i for i in items if is_path(i)]
    overrides = [i for i in items if not is_path(i)]
    return files, overrides


RUN_DIR_HELP = "a run directory, a path or URI (run.dir=PATH is read as PATH)"


def run_dir_argument(text: str) -> str:
    """A command's RUN_DIR; ``run.dir=PATH``, as the training commands take it, is PATH."""
    return text.removeprefix("run.dir=")


def config_of(args: argparse.Namespace) -> Config:
    """The config of a command's items (``--local``: runtime.local=true)."""
    files, overrides = split_items(args.config)
    if getattr(args, "local", False):
        overrides.append("runtime.local=true")
    from dbparallel.training.plan import fit_blocks

    return load_config(files, overrides, fit_blocks)


def cmd_data(args: argparse.Namespace) -> int:
    """``data check``: index and decode every row of a data set, as training would;
    ``data reshard``: rewrite it."""
    from dbparallel.data.sources import check_kind, open_data

    cfg = data_config(args.config, args.action)
    if args.action == "check" and args.out:
        raise UserError("--out: data check writes nothing; --out is for data reshard")
    batch = args.batch is not None
    if args.action != "encode" and (args.encoder or args.device or batch or args.dtype):
        given = "--encoder" if args.encoder else "--device" if args.device else \
            "--batch" if batch else "--dtype"
        raise UserError(f"{given}: for data encode")
    if args.action == "reshard":
        from dbparallel.cli_data_rewrite import reshard_command

        return reshard_command(cfg, args.out)
    if args.action == "encode":
        from dbparallel.cli_data_encode import encode

        return encode(cfg, args)
    check_kind(cfg.task, cfg.data)  # before a corpus is tokenized for nothing
    index = open_data(cfg.data)
    check_kind(cfg.task, cfg.data, index)
    try:  # checked all the same (e.g. a held-out set alone), but said: a run needs them
        index.shards("train")
    except DataError as err:
        print(f"warning: {err}; `dbparallel train` refuses these data", file=sys.stderr)
    for split in index.present():
        shards = len(index.shards(split))
        print(f"{split}: {index.num_rows(split):,} rows in {shards:,} shard"
              f"{'s' if shards != 1 else ''}")
    from dbparallel.training.data_memory import report_footprint

    report_footprint(cfg, index, checked=True)  # its warnings before the long pass
    if cfg.runtime.address or os.environ.get("RAY_ADDRESS"):  # on the cluster's CPUs
        from dbparallel.runtime.launch import check_on_cluster
        from dbparallel.training.data_check import report_check

        report_check(cfg, index, check_on_cluster(cfg, index, force=True))
    else:
        from dbparallel.training.data_check import check_here

        check_here(cfg, index, force=True)
    return 0


def data_config(items: Sequence[str], action: str) -> Config:
    """The config of a data command's items (``action``: check, reshard, encode): YAML
    recipes, key=value overrides, and the data's own path (one; its source guessed from what
    it holds unless data.source is given)."""
    items, guessed = list(items), ""
    given = [k for k, i in enumerate(items) if i.startswith("data.path=")
             or is_path(i) and not i.endswith((".yaml", ".yml"))]
    if len({_same_path(items[k].removeprefix("data.path=")) for k in given}) > 1:
        # which would be read is not what a reader of the line expects
        raise UserError(f"data {action}: the data are given {len(given)} times, as "
                        f"different paths ({', '.join(items[k] for k in given)}); give one "
                        f"path (or data.path=PATH)")
    items = [i for k, i in enumerate(items) if k not in given[1:]]  # the same path, once
    for i, item in enumerate(items):  # a bare path: the data itself
        if is_path(item) and not item.endswith((".yaml", ".yml")):
            items[i] = f"data.path={item}"
            if not any(x.startswith("data.source=") for x in items):
                guessed = _bare_source(item, _text_task(items))
                items.append(f"data.source={guessed}")
    files, overrides = split_items(items)
    cfg = load_config(files, overrides)
    if guessed == "text" and cfg.task not in TEXT_TASKS and os.path.isdir(cfg.data.path):
        raise UserError(_read_as_text(cfg.task, cfg.data.path))
    return cfg


def is_path(item: str) -> bool:
    """Whether a command-line item is a path, not a key=value override: it has no "=", or
    what comes before its "=" is no key (a Hive-style folder, ``data/year=2024``), or it is
    there on disk."""
    return "=" not in item or "/" in item.split("=", 1)[0] or os.path.exists(item)


def _same_path(path: str) -> str:
    """``path`` as two names of the same data compare equal: a local one absolute and
    normalised (``./a//b/`` is ``a/b``), a URI without a trailing ``/``."""
    if "://" in path:
        return path.rstrip("/")
    return os.path.abspath(os.path.expanduser(path))


def _text_task(items: list[str]) -> bool:
    """Whether the command line's recipes and overrides ask for a text task."""
    files, overrides = split_items(items)
    recipes = [f for f in files if f.endswith((".yaml", ".yml"))]
    return given_value(recipes, overrides, "task") in TEXT_TASKS


def _bare_source(path: str, text_task: bool = False) -> str:
    """data.source of a path given alone: text for a text file (.txt, .jsonl, .json, .ndjson,
    also compressed; local or a URI) or a local folder of them, image_folder for a local
    folder of images, parquet for anything with a Parquet file (and for other URIs). For a
    text task a local folder without a Parquet file is text, whatever else it holds (an image
    in it is then named: data/text.py)."""
    from pathlib import Path

    from dbparallel.data.file_names import PARQUET_SUFFIXES, text_file_name
    from dbparallel.data.image_folder import IMAGE_EXTENSIONS
    from dbparallel.data.text import ARCHIVES

    folder = Path(path)
    if "://" in path or os.path.isfile(path):  # (False, not OSError, for a name too long)
        name = path.split("?", 1)[0] if "://" in path else folder.name  # a URI's query
        archive = text_task and name.lower().endswith(ARCHIVES)  # refused, told to extract
        return "text" if text_file_name(name) or archive else "parquet"
    if not os.path.isdir(path):
        return "parquet"
    seen = [p for _, p in zip(range(10_000), folder.rglob("*"), strict=False)]
    suffixes = {p.suffix.lower() for p in seen}
    if suffixes & set(PARQUET_SUFFIXES):  # .parquet, .parq, .pq: as parquet_index reads
        return "parquet"
    if text_task:
        return "text"
    if suffixes & set(IMAGE_EXTENSIONS):
        return "image_folder"
    return "text" if any(text_file_name(p.name) for p in seen) else "parquet"


def _read_as_text(task: str, folder: str) -> str:
    """The error for an image task given a folder that holds text files but no image or
    Parquet file: what it holds, and the two ways on."""
    from collections import Counter
    from pathlib import Path

    from dbparallel.data.image_folder import IMAGE_EXTENSIONS

    seen = [p for _, p in zip(range(10_000), Path(folder).rglob("*"), strict=False)]
    held = Counter(p.suffix.lower() or p.name for p in seen if p.is_file()).most_common(4)
    return (f"data.path: {folder!r} holds no image ({' '.join(IMAGE_EXTENSIONS)}) or Parquet "
            f"file, so it reads as text ({', '.join(f'{s} ({n:,})' for s, n in held)}), and "
            f"task={task} trains on images: convert the images to one of those formats, or "
            f"set task={', '.join(TEXT_TASKS[:-1])} or {TEXT_TASKS[-1]} to train a language "
            f"model on the text")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """The ``data`` subcommand, on ``sub``."""
    d = sub.add_parser("data", help="data set tools: `data check` decodes every row once; "
                       "`data reshard --out DIR` rewrites image data in row groups of "
                       "data.shard_rows rows")
    d.add_argument("action", choices=["check", "reshard", "encode"],
                   help="check: decode every row once, as training would, and name every "
                        "bad one (up to 20); reshard: rewrite image data (Parquet, an image "
                        "folder) as Parquet in row groups of data.shard_rows rows, into --out; "
                        "encode: write the images' latents by your --encoder, into --out, "
                        "for data.latents=true")
    d.add_argument("config", nargs="*", help="a data set's path or URI (Parquet; an image "
                   "folder; a text file or folder of them, with task=ar|mdm|looped), or YAML "
                   "recipes, with key=value overrides (data.source=..., data.path=...)")
    d.add_argument("--out", default="", metavar="DIR",
                   help="reshard, encode: the new or empty folder (or object-store URI) to "
                        "write")
    d.add_argument("--encoder", default="", metavar="MODULE:FUNCTION",
                   help="encode: your autoencoder's encoder, importable here: it takes images "
                        "(N, C, H, W) floats in [0, 1] on --device and returns latents "
                        "(N, C', H', W')")
    d.add_argument("--device", default="", help="encode: where the encoder runs (default "
                   "cpu; cuda, cuda:N)")
    d.add_argument("--batch", type=int, default=None, help="encode: images per encoder call "
                   "(default 64)")
    d.add_argument("--dtype", default=None, choices=["float16", "float32"],
                   help="encode: how the latents are stored (default float16)")
    d.set_defaults(func=cmd_data)
