"""``data encode``: an image data set's latents, by the user's own encoder, written as Parquet
for ``data.latents=true`` training (data/latent_encoding.py, docs/vision.md, Latents): in
this process, or with runtime.address or RAY_ADDRESS set one Ray task per file on that
cluster (runtime/rewrite_ray.py)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from dbparallel.cli_data_rewrite import rewrite, rewritten_data, rows_progress, written_rows
from dbparallel.config import Config
from dbparallel.errors import UserError
from dbparallel.shell import shell_path

if TYPE_CHECKING:
    import torch

    from dbparallel.data.latent_encoding import LatentStats
    from dbparallel.data.parquet_out import Resharded
    from dbparallel.runtime.rewrite_ray import ClusterRewrite

DEFAULT_BATCH = 64


@dataclass
class Encoded:
    """What ``encode_data`` wrote: the files, the latents' shape (C', H', W'), mean and
    standard deviation, and the settings that train on them (``settings``: config keys and
    values; ``fits``: what the scale and shift given there do)."""

    done: Resharded
    stats: LatentStats
    settings: dict[str, Any]
    fits: str


def encode_data(cfg: Config, encoder: Callable[[torch.Tensor], torch.Tensor] | str,
                setting: str, out: str, device: str | None = "", batch: int | None = None,
                dtype: str = "float16", progress: bool | None = None,
                joined: bool = False, shown: str = "") -> Encoded:
    """Write the latents of every image of ``cfg``'s data into ``out`` by ``encoder`` (a
    function, or "module:function"; its errors name it as ``setting`` says): in this process
    on ``device``, or one Ray task per file on the cluster at runtime.address or RAY_ADDRESS,
    or (``joined``) the one this process joined (``device`` "cuda": a GPU each). Errors
    name ``out`` as ``shown`` (default ``--out OUT``)."""
    from dbparallel.data.latent_encoding import (
        Encode,
        LatentEncoder,
        LatentStats,
        decode_images,
        encode_rewrite,
    )
    from dbparallel.data.named_function import named_function
    from dbparallel.data.reshard import reshard
    from dbparallel.training.device import requested_device

    if cfg.data.latents:
        raise UserError("data.latents: data encode reads images (pixels), and writes latents")
    batch = DEFAULT_BATCH if batch is None else batch
    if batch < 1:
        raise UserError(f"--batch: must be >= 1, got {batch}")
    function = named_function(encoder, setting) if isinstance(encoder, str) else encoder
    index = rewritten_data(cfg, out, "encode", shown)
    def here() -> tuple[Resharded, list[object]]:
        coder = LatentEncoder(function, setting,
                              requested_device(None if device == "" else device,
                                               "device" if joined else "--device"),
                              batch, dtype)
        with rows_progress(index, "encode", progress) as bar:
            done = reshard(index, out, cfg.data.shard_rows, bar,
                           rewrite=Encode(cfg.data, coder))
        return done, [coder.stats]

    def cluster() -> ClusterRewrite:
        from dbparallel.data.own_code import own_modules, pack
        from dbparallel.runtime.rewrite_ray import ClusterRewrite

        on = task_device(device, "device" if joined else "--device")
        named = isinstance(encoder, str)
        return ClusterRewrite(partial(encode_rewrite, cfg.data, encoder, setting, on, batch,
                                      dtype), gpus=int(on == "cuda"),
                              code=pack(encoder, setting) if named else None,
                              by_value=() if named else own_modules(encoder),
                              agree=partial(LatentStats.merged, setting=setting),
                              check=partial(decode_images, cfg.data))

    done, parts = rewrite(cfg, index, out, "encode", here, cluster, progress, joined)
    written_rows(out, done, cfg.data.shard_rows)
    stats = LatentStats.merged(parts, setting)
    if stats.shape is None:
        raise UserError(f"{cfg.data.path or cfg.data.source}: no image to encode")
    sigma_data = cfg.noise.sigma_data
    c, h, _ = stats.shape
    settings: dict[str, Any] = {"data.source": "parquet", "data.path": out,
                                "data.latents": True, "data.channels": c,
                                "data.image_size": h, "data.num_classes": cfg.data.num_classes}
    if cfg.data.pixel_order != "chw":  # written channels first: hwc would scramble them
        settings["data.pixel_order"] = "chw"
    # off centre by more than a standard deviation, as latent_scale_warning tells it
    if abs(stats.mean) > stats.std:
        settings["data.latent_shift"] = float(f"{stats.mean:.6g}")
    settings["data.latent_scale"] = float(f"{sigma_data / stats.std:.4g}") \
        if stats.std > 0 else 1.0
    fits = (f"the shift and scale that bring them to mean 0 and noise.sigma_data="
            f"{sigma_data:g}; your autoencoder's own shift_factor and scaling_factor where it "
            f"has them" if "data.latent_shift" in settings else
            f"the scale that brings them to noise.sigma_data={sigma_data:g}; your "
            f"autoencoder's own scaling_factor where it has one")
    return Encoded(done, stats, settings, fits)


def encode(cfg: Config, args: argparse.Namespace) -> int:
    """``data encode``: write the latents of every image of ``cfg``'s data into
    ``args.out``, and print the settings that train on them."""
    if not args.encoder:
        raise UserError("data encode: --encoder MODULE:FUNCTION is required (your "
                        "autoencoder's encoder)")
    dtype = args.dtype or "float16"
    got = encode_data(cfg, args.encoder, f"--encoder {args.encoder}", args.out, args.device,
                      args.batch, dtype)
    c, h, _ = got.stats.shape
    files = f"{len(got.done.files)} file" + ("s" if len(got.done.files) != 1 else "")
    print(f"wrote {files} to {args.out}: latents of {c}x{h}x{h} ({dtype}), "
          f"mean {got.stats.mean:.4g}, standard deviation {got.stats.std:.4g}")
    keys = " ".join(f"{k}={shell_path(v) if k == 'data.path' else _value(v)}"
                    for k, v in got.settings.items())
    print(f"train on them with {keys} ({got.fits}), and sample.decoder=MODULE:FUNCTION to "
          f"see and score its samples as images")
    return 0


def _value(v: object) -> str:
    return str(v).lower() if isinstance(v, bool) else f"{v:g}" if isinstance(v, float) \
        else str(v)


def task_device(device: str | torch.device | None, key: str = "--device") -> str:
    """Where the encoder runs in each Ray task of ``device`` (named as ``key``: a command's
    --device, a program's device): the CPU, or a GPU of the task's own ("cuda"); UserError
    for another device, a GPU's number, or what is no device's name."""
    from dbparallel.training.device import device_name

    name = device_name(device, key)
    if name in (None, "", "cpu", "cuda"):
        return name or "cpu"
    shown = f"{key} {name}" if key.startswith("--") else f"{key}={name!r}"
    if name.startswith("cuda:"):
        cuda = f"{key} cuda" if key.startswith("--") else f"{key}='cuda'"
        raise UserError(f"{shown}: on a Ray cluster each task of data encode takes a GPU of "
                        f"its own; give {cuda}")
    raise UserError(f"{shown}: expected cpu or cuda")
