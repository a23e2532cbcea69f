"""``data encode``: an image data set's latents, by the user's own encoder, written as Parquet
for ``data.latents=true`` training (data/latent_encoding.py, docs/vision.md, Latents): in
this process, or with runtime.address or RAY_ADDRESS set one Ray task per file on that
cluster (runtime/rewrite_ray.py)."""

from __future__ import annotations

import argparse
import sys
from functools import partial
from typing import TYPE_CHECKING

from dbparallel.cli_data_rewrite import rewrite, rewritten_data, written_rows
from dbparallel.config import Config
from dbparallel.errors import UserError
from dbparallel.shell import shell_path

if TYPE_CHECKING:
    from dbparallel.data.parquet_out import Resharded
    from dbparallel.runtime.rewrite_ray import ClusterRewrite

DEFAULT_BATCH = 64


def encode(cfg: Config, args: argparse.Namespace) -> int:
    """Write the latents of every image of ``cfg``'s data into ``args.out``, and the settings
    that train on them."""
    from dbparallel.data.latent_encoding import (
        Encode,
        LatentEncoder,
        LatentStats,
        encode_rewrite,
    )
    from dbparallel.data.named_function import named_function
    from dbparallel.data.reshard import reshard
    from dbparallel.training.device import requested_device

    if not args.encoder:
        raise UserError("data encode: --encoder MODULE:FUNCTION is required (your "
                        "autoencoder's encoder)")
    if cfg.data.latents:
        raise UserError("data.latents: data encode reads images (pixels), and writes latents")
    batch = DEFAULT_BATCH if args.batch is None else args.batch
    if batch < 1:
        raise UserError(f"--batch: must be >= 1, got {batch}")
    function = named_function(args.encoder, f"--encoder {args.encoder}")
    index = rewritten_data(cfg, args.out, "encode")
    dtype = args.dtype or "float16"

    def here() -> tuple[Resharded, list[object]]:
        encoder = LatentEncoder(function, args.encoder, requested_device(args.device or None),
                                batch, dtype)
        done = reshard(index, args.out, cfg.data.shard_rows, progress=sys.stderr.isatty(),
                       rewrite=Encode(cfg.data, encoder), desc="encode")
        return done, [encoder.stats]

    def cluster() -> ClusterRewrite:
        from dbparallel.data.own_code import pack
        from dbparallel.runtime.rewrite_ray import ClusterRewrite

        device = task_device(args.device)
        return ClusterRewrite(partial(encode_rewrite, cfg.data, args.encoder, device, batch,
                                      dtype), gpus=int(device == "cuda"),
                              code=pack(args.encoder, f"--encoder {args.encoder}"))

    done, parts = rewrite(cfg, index, args.out, "encode", here, cluster)
    written_rows(args.out, done, cfg.data.shard_rows)
    stats = LatentStats.merged(parts, args.encoder)
    sigma_data = cfg.noise.sigma_data
    c, h, _ = stats.shape
    files = f"{len(done.files)} file" + ("s" if len(done.files) != 1 else "")
    scale = f"{sigma_data / stats.std:.4g}" if stats.std > 0 else "1"
    # off centre by more than a standard deviation, as latent_scale_warning tells it
    shift = f"data.latent_shift={stats.mean:.6g} " if abs(stats.mean) > stats.std else ""
    fits = (f"the shift and scale that bring them to mean 0 and noise.sigma_data="
            f"{sigma_data:g}; your autoencoder's own shift_factor and scaling_factor where it "
            f"has them" if shift else
            f"the scale that brings them to noise.sigma_data={sigma_data:g}; your "
            f"autoencoder's own scaling_factor where it has one")
    # written channels first: a recipe's data.pixel_order=hwc would scramble them unwarned
    order = "data.pixel_order=chw " if cfg.data.pixel_order != "chw" else ""
    print(f"wrote {files} to {args.out}: latents of {c}x{h}x{h} ({args.dtype or 'float16'}), "
          f"mean {stats.mean:.4g}, standard deviation {stats.std:.4g}")
    print(f"train on them with data.source=parquet data.path={shell_path(args.out)} "
          f"data.latents=true data.channels={c} data.image_size={h} "
          f"data.num_classes={cfg.data.num_classes} {order}{shift}"
          f"data.latent_scale={scale} ({fits}), and sample.decoder=MODULE:"
          f"FUNCTION to see and score its samples as images")
    return 0


def task_device(device: str) -> str:
    """Where the encoder runs in each Ray task of ``--device`` ``device``: the CPU, or a GPU
    of the task's own ("cuda"); UserError for another device or a GPU's number."""
    if device in ("", "cpu", "cuda"):
        return device or "cpu"
    if device.startswith("cuda:"):
        raise UserError(f"--device {device}: on a Ray cluster each task of data encode takes "
                        f"a GPU of its own; give --device cuda")
    raise UserError(f"--device {device}: expected cpu or cuda")
