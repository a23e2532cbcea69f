"""Checks of the data section that read other keys too: the image column's latents, and the
data.source a text task's data.path needs."""

from __future__ import annotations

import math
from typing import Any

from dbparallel.config.checks import STORED, check


def check_latent_keys(data: Any) -> None:
    """data.latent_scale and data.latent_shift are finite, the scale above 0; data.latents
    are read from Parquet (the built-in sets and image folders hold pixels)."""
    if not STORED.get():
        check(math.isfinite(data.latent_scale) and data.latent_scale > 0, "data.latent_scale",
              f"must be a finite number > 0, got {data.latent_scale}")
        check(math.isfinite(data.latent_shift), "data.latent_shift",
              f"must be a finite number, got {data.latent_shift}")
    if data.latents:
        check(data.source == "parquet", "data.latents",
              f"latents are read from a Parquet table's image column (data.source=parquet); "
              f"data.source={data.source} holds pixels")


def check_latents(cfg: Any) -> None:
    """Latents are images for dit and vit alone; FID scores pixels, so latents need
    sample.decoder for it, which pixels do not need."""
    if not cfg.data.latents:
        check(not cfg.sample.decoder, "sample.decoder",
              "decodes latents (data.latents=true); these data are pixels")
        return
    check(cfg.task in ("dit", "vit"), "data.latents",
          f"latents are images, for task=dit or vit; task={cfg.task} reads text")
    check(cfg.task == "dit" or not cfg.sample.decoder, "sample.decoder",
          "decodes a dit's samples; a vit samples no images")
    check(not cfg.sample.fid or bool(cfg.sample.decoder), "sample.fid",
          "FID scores pixels, and with data.latents=true the samples are latents: set "
          "sample.decoder to your autoencoder's decoder (module:function), or "
          "sample.fid=false")


def path_hint(data: Any) -> str:
    """For a text task whose data.path is set while data.source is an image set (digits, the
    default, or fashion_mnist): which data.source reads it."""
    if not data.path or data.source not in ("digits", "fashion_mnist"):
        return ""
    return ("; data.path is set: give data.source=text for a text file (.txt, .jsonl, .json, "
            f".ndjson) or a folder of them, or data.source=parquet for Parquet with a "
            f"{data.text_field!r} column (data.text_field)")
