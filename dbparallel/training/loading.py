"""``load``: the composed network of a run directory or of an export file; ``export_run``."""

from __future__ import annotations

import logging
import os

import pyarrow.fs as pafs

from dbparallel.config import Config
from dbparallel.data.tokenizer import Tokenizer, load_tokenizer, tokenizer_from_description
from dbparallel.errors import DataError, RunDirError, UserError
from dbparallel.shell import shell_path
from dbparallel.training.arguments import number
from dbparallel.training.data_pin import pinned_data, run_data, run_tokenizer
from dbparallel.training.export import damaged_export, export_bytes, read_export
from dbparallel.training.network import Network
from dbparallel.training.run_dir import check_out_file
from dbparallel.training.run_files import run_config
from dbparallel.training.snapshots import load_snapshots
from dbparallel.training.storage import Storage, reached, split_uri

TEXT_TASKS = ("mdm", "ar", "looped")
log = logging.getLogger(__name__)


def load(source: str | os.PathLike, step: int | None = None,
         device: str | None = None) -> Network:
    """The composed network of a run directory (local path or object-store URI; its latest
    snapshots, or those of ``step``) or of a file written by ``dbparallel export``, on
    ``device`` (training/device.py: "cpu" by default, "cuda" or "cuda:N" where one is here)."""
    if not isinstance(source, (str, os.PathLike)):
        raise UserError(f"source: a run directory or an export file (a path or URI), got "
                        f"{type(source).__name__}")
    source = os.fspath(source)
    _check_step(step)
    if is_file(source):
        if source.lower().endswith((".yaml", ".yml")):
            raise UserError(f"{source}: a recipe; give the run directory it trained (its "
                            f"run.dir) or a file `dbparallel export` wrote")
        if step is not None:
            raise RunDirError(f"{source}: an export holds one step per block; step= applies "
                              "to run directories")
        return _said_unfinished(load_export(source, device), source, None, export=True)
    return _said_unfinished(load_run(source, step, device), source, step)


def _said_unfinished(network: Network, source: str, step: int | None,
                     export: bool = False) -> Network:
    """``network``, after a warning where its latest snapshots (those an ``export`` holds) are
    of blocks not trained to the end (a run still training, or stopped): it composes them as
    they are."""
    behind = [f"block {b} at step {s:,} of {network.cfg.train.steps_of(b):,}"
              for b, s in enumerate(network.steps) if s < network.cfg.train.steps_of(b)]
    if step is None and behind:
        why = ("exported before they were" if export else
               f"the run is training, or stopped: `dbparallel status {shell_path(source)}`")
        log.warning("%s: %s: not trained to the end (%s); the network composes the blocks as "
                    "they are", source, ", ".join(behind), why)
    return network


def _check_step(step: object) -> None:
    """UserError naming ``step`` unless it is None or a step number (``"12"`` would look for a
    snapshot of a step no block has, and say that 12 is kept)."""
    if step is not None:
        number(step, "step", whole=True)
        if step < 0:
            raise UserError(f"step: a training step is >= 0, got {step}")


def is_file(source: str) -> bool:
    """Whether ``source`` names a file (an export) rather than a directory."""
    kind = reached(source)[1].type
    if kind == pafs.FileType.NotFound:
        raise RunDirError(f"{source}: no such run directory or export file")
    return kind == pafs.FileType.File


def _is_existing_file(source: str) -> bool:
    """Whether ``source`` is a file; False where it is missing (load_run names that)."""
    try:
        return is_file(source)
    except RunDirError:
        return False


def load_run(run_dir: str, step: int | None = None, device: str | None = None,
             cfg: Config | None = None) -> Network:
    """The network of a run directory's latest snapshots (those of ``step`` if given);
    refuses a block that is missing or was trained with another config, naming it."""
    cfg = cfg or run_config(run_dir)
    storage = Storage(run_dir)
    snapshots = load_snapshots(cfg, storage, step)
    network = Network.from_weights(cfg, [s["ema"] for s in snapshots],
                                   [int(s["meta"]["step"]) for s in snapshots], device,
                                   _tokenizer(cfg, storage))
    network.class_names = _class_names(cfg, storage)
    return network


def _class_names(cfg: Config, storage: Storage) -> list[str]:
    """The names of an image network's labels (a classifier's classes, a generator's
    conditions), where its run's pinned data name them (a damaged or missing
    data_index.json: none; the label numbers do)."""
    from dbparallel.data.reshard import class_names

    if cfg.task in TEXT_TASKS:
        return []
    try:
        pinned = pinned_data(storage)
    except RunDirError:
        return []
    return class_names(pinned) if pinned is not None else []


def _tokenizer(cfg: Config, storage: Storage) -> Tokenizer | None:
    if cfg.task not in TEXT_TASKS:
        return None
    # runs started before vocab.json was kept: the tokenizer of the data they pinned
    return run_tokenizer(storage) or load_tokenizer(run_data(cfg, storage).meta)


def load_export(path: str, device: str | None = None) -> Network:
    """The network of an export file (local path or object-store URI)."""
    folder, name = split_uri(path)
    exported = read_export(Storage(folder).read_bytes(name), path)
    try:
        tokenizer = (tokenizer_from_description(exported.tokenizer)
                     if exported.tokenizer is not None else None)
    except DataError as err:
        raise damaged_export(path, "metadata 'tokenizer'", str(err)) from None
    try:
        network = Network.from_weights(exported.cfg, exported.weights, exported.steps, device,
                                       tokenizer)
    except RunDirError as err:  # a tensor that does not fit the network of the config
        raise damaged_export(path, "metadata 'config'",
                      f"its network does not fit the tensors: {err}") from None
    network.class_names = exported.class_names
    return network


def export_run(run_dir: str, out: str, step: int | None = None) -> Network:
    """Write the network of ``run_dir`` (its latest snapshots, or those of ``step``) to the
    single file ``out``; returns it (on the CPU). Refuses an ``out`` that is a folder or a
    file of a run directory (its config, checkpoints, ...), naming it, before reading."""
    check_out_file(out, "out")
    _check_step(step)
    if _is_existing_file(run_dir):
        raise UserError(f"{run_dir}: is a file (an export?); export writes one from a run "
                        f"directory, and an export file is copied as it is")
    network = _said_unfinished(load_run(run_dir, step, "cpu"), run_dir, step)
    tokenizer = network.tokenizer.describe() if network.tokenizer is not None else None
    data = export_bytes(network.cfg, [b.state_dict() for b in network.blocks], network.steps,
                        network.task.partition.to_json(), tokenizer, network.class_names)
    folder, name = split_uri(out)
    storage = Storage(folder)
    try:
        storage.makedirs()
        storage.write_bytes(name, data)
    except OSError as err:
        raise UserError(f"{out}: cannot write the export ({err.strerror or err})") from None
    return network
