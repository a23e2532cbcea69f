"""dbparallel: DiffusionBlocks training with one concurrent, independent actor per block.

``dbparallel.train(recipe, overrides={...})`` trains a run as ``dbparallel train`` does and
returns its report; ``dbparallel.load(run_dir_or_file)`` returns a trained network with its
task's verbs (``sample``, ``predict``, ``generate``, ``bpc``, ``log_likelihood``);
``dbparallel.status(run_dir)`` says where a run stands; ``dbparallel.encode(data, encoder,
out)`` writes an image data set's latents by your encoder; see docs/api.md. A run that
``dbparallel stop`` (SIGTERM) stops raises ``dbparallel.Terminated``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from dbparallel.cli_stop import Terminated, stop_on_sigterm

if TYPE_CHECKING:
    from dbparallel.training.network import Network
    from dbparallel.training.status import RunStatus

__version__ = "0.1.0"


def train(*recipes: str | os.PathLike | Sequence[str | os.PathLike],
          overrides: Mapping[str, Any] | Sequence[str] | None = (), local: bool = False,
          blocks: Sequence[int] | None = None, progress: bool | None = None) -> dict[str, Any]:
    """Train the run that the YAML ``recipes`` (merged in order; ``train("a.yaml", "b.yaml")``
    or one list of them) and ``overrides`` describe, exactly as ``dbparallel train`` does, and
    return its report (report.json's content).

    ``overrides``: ``{"train.steps": 500, "run.dir": "runs/x"}`` (nested mappings give dotted
    keys) or ``["train.steps=500"]`` (None: none). ``local=True`` trains in this process without Ray
    (``--local``; so does a recipe with ``runtime.local: true``), ``blocks`` only those blocks
    (with ``local=True``; None: every block). Otherwise the blocks train as Ray actors in the
    Ray instance this process is already connected to, else on the cluster at
    ``runtime.address`` or ``RAY_ADDRESS``, else in a private local one. Re-running on an
    existing ``run.dir`` resumes it. Bad input raises ``dbparallel.errors.UserError`` (its
    message names the key, file or row) before anything trains; a failed run raises
    ``RuntimeError``. ``progress``: progress bars (default: when stderr is a terminal).

    SIGTERM (``dbparallel stop RUN_DIR``, ``kill``) stops the run as Ctrl-C does: where it
    is, its checkpoints kept and its blocks' write leases released, and the call raises
    ``dbparallel.Terminated`` (a KeyboardInterrupt). For that it takes SIGTERM during the call
    where the program left SIGTERM's default (or the handler ``ray.init`` installs) and calls
    from its main thread, and puts that handler back after; a handler the program set is left
    as it is."""
    with stop_on_sigterm() as stop, _rng_kept():
        try:
            return _train(recipes, overrides, local, blocks, progress)
        except KeyboardInterrupt as err:  # a Ray call SIGTERM cut short raises a plain one
            if stop is None or stop.first != signal.SIGTERM or isinstance(err, Terminated):
                raise
            raise Terminated() from err


def _train(recipes: tuple[str | os.PathLike | Sequence[str | os.PathLike], ...],
           overrides: Mapping[str, Any] | Sequence[str] | None, local: bool,
           blocks: Sequence[int] | None, progress: bool | None) -> dict[str, Any]:
    """``train``'s work, once its signal handler is in place."""
    from dbparallel.config import load_config
    from dbparallel.runtime.train import train_run
    from dbparallel.training.plan import fit_blocks

    # train(["a.yaml", "b.yaml"]) as train("a.yaml", "b.yaml")
    recipes = tuple(r for item in recipes
                    for r in (item if isinstance(item, (list, tuple)) else [item]))
    for r in recipes:
        if not isinstance(r, (str, os.PathLike)):
            what = ("; config keys go in overrides={...}" if isinstance(r, Mapping) else "")
            raise TypeError(f"recipes: paths of YAML files, got {type(r).__name__} {r!r:.40}"
                            f"{what}")
    items = _override_items(overrides)
    if local:
        items.append("runtime.local=true")
    cfg = load_config([os.fspath(r) for r in recipes], items, fit_blocks)
    if blocks is not None and not isinstance(blocks, Collection):
        from dbparallel.errors import UserError

        raise UserError(f"blocks: a list of block numbers, e.g. [0], got "
                        f"{type(blocks).__name__} {blocks!r:.40}")
    if blocks is not None and not len(blocks):  # (an empty selection trains nothing)
        from dbparallel.errors import UserError

        raise UserError("blocks: empty; name the blocks to train, e.g. blocks=[0], or leave "
                        "it None for every block")
    for b in blocks or ():  # named as the API names them (the command line: --block B)
        if isinstance(b, bool) or not isinstance(b, int) or not 0 <= b < cfg.model.blocks:
            from dbparallel.errors import UserError

            raise UserError(f"blocks: {b!r} is not a block of this run: blocks are 0.."
                            f"{cfg.model.blocks - 1} (model.blocks={cfg.model.blocks})")
    return train_run(cfg, list(blocks) if blocks else None, progress)


@contextlib.contextmanager
def _rng_kept() -> Iterator[None]:
    """The program's own torch random stream (CPU) as it was before the call, whatever the
    call drew from it (a network's layers are initialised before its weights are read): a
    seeded program draws the same numbers after ``load`` or ``train`` as without."""
    import torch

    with torch.random.fork_rng(devices=[]):
        yield


def _override_items(overrides: Mapping[str, Any] | Sequence[str] | None) -> list[str]:
    """``key=value`` strings of a mapping (nested mappings give dotted keys) or a list;
    None: none."""
    if overrides is None:
        return []
    if isinstance(overrides, str):
        raise TypeError("overrides: a mapping or a list of key=value strings, not one string")
    if not isinstance(overrides, Mapping):
        if not isinstance(overrides, Iterable):
            raise TypeError(f"overrides: a mapping or a list of key=value strings, got "
                            f"{type(overrides).__name__} {overrides!r:.40}")
        for item in overrides:
            if not isinstance(item, str):
                raise TypeError(f"overrides: key=value strings, got {type(item).__name__} "
                                f"{item!r:.40}")
        return list(overrides)
    items: list[str] = []

    def add(key: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                add(f"{key}.{k}", v)
        else:
            items.append(f"{key}={_yaml_value(value)}")

    for key, value in overrides.items():
        add(str(key), value)
    return items


def _yaml_value(value: Any) -> str:
    """``value`` as an override's right-hand side, read back as the same value: strings and
    paths quoted (so "yes", "[x]" or "" stay strings), None as null, lists as YAML lists."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_yaml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def encode(data: str | os.PathLike, encoder: Callable[[Any], Any] | str,
           out: str | os.PathLike, overrides: Mapping[str, Any] | Sequence[str] | None = (),
           device: str = "cpu", batch: int = 64, dtype: str = "float16",
           progress: bool | None = None) -> dict[str, Any]:
    """Write the latents of every image of ``data`` (a data set's path or URI, or a YAML
    recipe that names one) by ``encoder`` into ``out`` (a new or empty folder, path or URI),
    as ``dbparallel data encode`` does, and return what was written with the settings that
    train on them: ``{"files": [...], "rows": {"train": N, ...}, "shape": [C', H', W'],
    "mean": m, "std": s, "settings": {"data.source": "parquet", "data.path": out,
    "data.latents": True, "data.channels": C', "data.image_size": H', ...,
    "data.latent_scale": x}}``; ``settings`` are overrides for ``train``.

    ``encoder``: a function (a model's bound method, a closure over one) or
    "module:function"; it takes images (N, C, H, W) as floats in [0, 1] on ``device``,
    ``batch`` at a time, decoded as training decodes them (``overrides``:
    ``{"data.image_size": 256, "data.resize": True}``), and returns latents (N, C', H', W'),
    stored as ``dtype`` ("float16" or "float32"). In a process that joined a Ray instance,
    or with runtime.address or RAY_ADDRESS set, each file is written by a Ray task on that
    cluster (``device="cuda"``: a GPU each; a function is sent to the tasks with what it
    holds). Bad input raises ``dbparallel.errors.UserError``, a bad image
    ``dbparallel.errors.DataError`` naming every bad one, with nothing left in ``out``."""
    from dbparallel.cli_data import data_config
    from dbparallel.cli_data_encode import encode_data
    from dbparallel.errors import UserError

    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise UserError(f"batch: images per encoder call, an int >= 1; got {batch!r}")
    if dtype not in ("float16", "float32"):
        raise UserError(f"dtype: how the latents are stored, float16 or float32; got "
                        f"{dtype!r}")
    if not isinstance(encoder, str) and not callable(encoder):
        raise UserError(f"encoder: a function or 'module:function', got "
                        f"{type(encoder).__name__}")
    name = encoder if isinstance(encoder, str) else \
        getattr(encoder, "__qualname__", type(encoder).__name__)
    with _rng_kept():
        cfg = data_config([os.fspath(data), *_override_items(overrides)], "encode")
        got = encode_data(cfg, encoder, f"encoder={name}", os.fspath(out), device, batch,
                          dtype, progress, joined=True, shown=f"out={os.fspath(out)!r}")
    return {"files": got.done.files, "rows": got.done.rows, "shape": list(got.stats.shape),
            "mean": got.stats.mean, "std": got.stats.std, "settings": got.settings}


def load(source: str | os.PathLike, step: int | None = None,
         device: str | None = None) -> Network:
    """The composed network of a run directory (path or URI; its latest snapshots, or those
    of ``step``) or of a file written by ``dbparallel export``, on ``device`` ("cpu", the
    default, "cuda" or "cuda:N"; a CUDA device that is not here is an error). Needs no Ray."""
    from dbparallel.training.loading import load as load_network

    with _rng_kept():
        return load_network(source, step, device)


def export(run_dir: str | os.PathLike, out: str | os.PathLike, step: int | None = None) -> Network:
    """Write every block's EMA weights of ``run_dir`` (the latest snapshots, or those of
    ``step``), its config and partition to the single safetensors file ``out`` (path or URI);
    returns the network written. Refuses a run with a block missing or trained with another
    config, naming it."""
    from dbparallel.training.loading import export_run

    with _rng_kept():
        return export_run(os.fspath(run_dir), os.fspath(out), step)


def status(run_dir: str | os.PathLike) -> RunStatus:
    """Where the run in ``run_dir`` (path or URI) stands, read from its files alone, as
    ``dbparallel status`` prints it: ``.state``, ``.blocks`` (each with ``state``,
    ``logged_step``, ``checkpoint_step``, ``loss``, ``writer``, ...), ``.assembly``,
    ``.report``, ``.run`` and ``.run_id`` (its metrics' labels); ``.to_json()`` gives a
    dict."""
    from dbparallel.training.run_files import run_config
    from dbparallel.training.status import run_status
    from dbparallel.training.storage import Storage

    path = os.fspath(run_dir)
    cfg = run_config(path)  # says where the run directory cannot be reached
    return run_status(Storage(path), cfg)
