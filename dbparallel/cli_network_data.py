"""The data a command that uses a trained network reads (eval, sample): the data its run trained
on, where they are now, or other data of the same kind (--data), refused in the network's terms.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dbparallel.config import FILE_SOURCES, TEXT_TASKS
from dbparallel.errors import UserError

if TYPE_CHECKING:
    from dbparallel.config import Config, DataConfig
    from dbparallel.data.shards import DataIndex
    from dbparallel.training.network import Network


def network_data(network: Network, source: str, path: str = "") -> DataIndex:
    """The data at ``path`` (--data), else the data a run trained on (its pinned index,
    rebuilt here where it lives in another machine's cache); for an export, or a run that
    pinned none, the data its config names."""
    from dbparallel.errors import DataError, RunDirError
    from dbparallel.training.data_pin import OTHER_DATA_FIX, pinned_data, run_data
    from dbparallel.training.loading import is_file
    from dbparallel.training.storage import Storage

    if path:
        return data_at(network, path)
    elsewhere = "; --data PATH reads them where they are now"
    try:
        if not is_file(source):
            storage = Storage(source)
            if pinned_data(storage):
                return run_data(network.cfg, storage)
        index = labelled(network, network.cfg.data)
    except DataError as err:  # e.g. moved, or an export on a machine without them
        gone = "not there" in str(err) or "no such" in str(err)
        if network.cfg.data.source not in FILE_SOURCES or not gone:
            raise
        raise DataError(f"{err}{elsewhere}") from None
    except RunDirError as err:  # rebuilt here (a cache that lost them) from data that changed
        if OTHER_DATA_FIX not in str(err):
            raise
        raise RunDirError(str(err).replace(OTHER_DATA_FIX, "--data PATH reads the data at PATH "
                                           "as they are now, other data of the same kind "
                                           "included")) from None
    _same_classes(network, index, f"data.path {network.cfg.data.path}")
    return index


def labelled(network: Network, data: DataConfig) -> DataIndex:
    """The index of ``data``; an image folder labelled by the network's class names, where it
    has them, not by its own sorted folders (a folder with a class fewer or more would shift
    every label after it)."""
    from dbparallel.data.image_folder import image_folder_index
    from dbparallel.data.sources import open_data

    if data.source == "image_folder" and network.class_names:
        return image_folder_index(data, network.class_names)
    return open_data(data)


def data_at(network: Network, path: str) -> DataIndex:
    """--data: the data at ``path``, read as the network's config reads its data.path; a
    text network's tokenizer must be the one those texts give."""
    import dataclasses

    from dbparallel.data.sources import check_kind
    from dbparallel.data.text import ImagesNotText
    from dbparallel.data.tokenizer import load_tokenizer, vocabulary_difference
    from dbparallel.errors import DataError, OtherData

    data = network.cfg.data
    if data.source not in FILE_SOURCES:  # built in (digits, shakespeare): nothing moves
        raise UserError(f"--data: the network was trained on data.source={data.source}, "
                        f"which is built in and read from no path; --data is for "
                        f"data.source={', '.join(FILE_SOURCES)}")
    try:
        other = dataclasses.replace(data, path=path)
        check_kind(network.cfg.task, other)  # a table of the other kind, or without the field
        index = labelled(network, other)
    except (ImagesNotText, OtherData) as err:  # their fix is for training: this run is trained
        raise DataError(f"--data {path}: {err.found}: {takes(network.cfg)}") from None
    except DataError as err:  # named by the option the path was given with
        raise DataError(f"--data: {str(err).removeprefix('data.path: ')}") from None
    _same_classes(network, index, f"--data {path}")
    if network.tokenizer is not None and \
            (given := load_tokenizer(index.meta)).describe() != network.tokenizer.describe():
        raise UserError(f"--data {path}: these texts give another tokenizer than the "
                        f"network's (data.tokenizer={network.tokenizer.name}, from the text it "
                        f"was trained on{vocabulary_difference(given, network.tokenizer)}): "
                        f"the same token ids would be other text; give the text it was "
                        f"trained on")
    return index


def _same_classes(network: Network, index: DataIndex, given: str) -> None:
    """Refuse data whose labels name other classes than the network's (Parquet that
    `data reshard` wrote from another image folder): label k would be another class."""
    from dbparallel.data.image_folder import listed
    from dbparallel.data.reshard import class_names
    from dbparallel.errors import DataError

    names, ours = class_names(index), network.class_names
    if not names or not ours or names == ours:
        return
    shared = min(len(names), len(ours))
    k = next((k for k in range(shared) if names[k] != ours[k]), shared)
    there = repr(names[k]) if k < len(names) else "no class"
    here = repr(ours[k]) if k < len(ours) else "no class"
    raise DataError(f"{given}: its labels name other classes ({listed(names)}) than "
                    f"the network's ({listed(ours)}): label {k} is {there} there and {here} "
                    f"to the network; give data labelled as it was trained (an image folder "
                    f"is labelled by its folders' names)")


def takes(cfg: Config) -> str:
    """What a run of ``cfg`` is and what its --data takes (read as its data.source reads
    data.path): what a refusal of other data names, in place of training's fix."""
    task, source = cfg.task, cfg.data.source
    if task in TEXT_TASKS:
        field = f"{cfg.data.text_field!r} (the run's data.text_field)"
        takes = (f"a text, JSONL or Parquet file, or a folder of them, the documents of JSONL "
                 f"and Parquet in field {field}" if source == "text" else
                 f"a Parquet file with a string column {field}, or a folder of them")
        if source == "text":
            return f"this run is a text run (task={task}), and --data takes text: {takes}"
        return (f"this run is a text run (task={task}) read from Parquet "
                f"(data.source={source}), and --data takes Parquet: {takes}")
    takes = {"image_folder": "a folder holding a folder of images (PNG, JPEG, ...) per class",
             "fashion_mnist": "a folder of the four Fashion-MNIST IDX files, or a Parquet "
                              "table with image and label columns"}.get(
        source, "a Parquet file with image and label columns, or a folder of them")
    return (f"this run is an image run (task={task}, data.source={source}), and --data takes "
            f"images: {takes}")
