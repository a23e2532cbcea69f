"""Checks of what a caller of the Python API passes a network's verbs: a value of another type
is a UserError naming the argument, as a bad value is, never a TypeError from deep inside."""

from __future__ import annotations

import numbers
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from dbparallel.errors import UserError

if TYPE_CHECKING:
    import torch


def texts_of(value: Any, name: str) -> tuple[list[str], bool]:
    """(the texts of ``value``, whether it was one text): a string, or strings in a list,
    tuple, array, pandas column or any other iterable."""
    if isinstance(value, str):
        return [value], True
    if not isinstance(value, Iterable) or isinstance(value, (bytes, bytearray)):
        raise UserError(f"{name}: expected a string or a list of strings, got "
                        f"{type(value).__name__} {value!r:.40}")
    texts = list(value)
    bad = next((t for t in texts if not isinstance(t, str)), None)
    if bad is not None:
        raise UserError(f"{name}: expected a string or a list of strings, got "
                        f"{type(bad).__name__} {bad!r:.40} among them")
    return [str(t) for t in texts], False


def number(value: Any, name: str, whole: bool = False) -> None:
    """UserError naming ``name`` unless ``value`` is a real number (an integer, ``whole``)."""
    kind = numbers.Integral if whole else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        raise UserError(f"{name}: expected {'an integer' if whole else 'a number'}, got "
                        f"{type(value).__name__} {value!r:.40}")


def _tensor(value: Any, name: str, expected: str, hint: str = "") -> torch.Tensor:
    """``value`` as a tensor; a UserError naming ``name`` and what was ``expected`` (and
    ``hint``, how to get there) where it is none (a string, a path, an image object, a list
    of tensors)."""
    import numpy as np
    import torch

    if isinstance(value, np.ndarray) and not value.flags.writeable:
        value = value.copy()  # np.asarray(PIL image): read-only, which torch warns of
    if not isinstance(value, (str, bytes, os.PathLike)):
        try:
            return torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError):
            pass
    raise UserError(f"{name}: expected {expected}, got {type(value).__name__} {value!r:.40}"
                    f"{hint}")


def labels_of(value: Any, classes: int) -> torch.Tensor:
    """The class numbers of ``value`` (an integer, or integers in a list, array or tensor) as
    one long tensor; a UserError naming ``labels`` for anything else or a class out of range."""
    import torch

    expected = f"class numbers 0..{classes - 1} (an integer, or a list or tensor of them)"
    x = _tensor(value, "labels", expected)
    if x.dim() > 1:  # one image per label: a table of them is no list
        raise UserError(f"labels: expected {expected}, got {x.dim()} dimensions "
                        f"{tuple(x.shape)}; .flatten() them for one image each")
    x = x.reshape(-1)
    whole = not (x.dtype == torch.bool or x.is_complex()) and (
        not x.is_floating_point() or bool(torch.equal(x, x.round())))
    if not whole:
        raise UserError(f"labels: expected {expected}, got {x.dtype} {x.tolist()!r:.40}")
    x = x.long()
    if len(x) and (x.min() < 0 or x.max() >= classes):
        raise UserError(f"labels: classes are 0..{classes - 1}, got {x.tolist()}")
    return x


def _image_hint(value: Any, channels: int, size: int) -> str:
    """How to turn an image file's path or a PIL image into the pixels ``images_of`` takes:
    converted to data.channels' mode as training converts them, cut and resized to
    data.image_size square (training takes images of that size only)."""
    mode = "L" if channels == 1 else "RGB"
    pixels = (f"torch.from_numpy(np.array(ImageOps.fit(image.convert({mode!r}), "
              f"({size}, {size}))))" + ("[None]" if channels == 1 else ".permute(2, 0, 1)"))
    if isinstance(value, (str, os.PathLike)):
        return (f"; `dbparallel predict RUN_DIR FILE` reads image files, or open it with "
                f"Pillow and pass {pixels}")
    if type(value).__module__.startswith("PIL."):
        return (f"; pass its pixels: {pixels} (PIL's ImageOps.fit crops and resizes it to "
                f"{size}x{size}, as the network takes)")
    return ""


def images_of(value: Any, channels: int, size: int, latents: bool = False) -> torch.Tensor:
    """Pixels in [0, 1], (N, C, H, W), of ``value``: a tensor or array (N, C, H, W), or one
    image (C, H, W), of floats in [0, 1] or uint8 (``latents``: of finite floats, as the run's
    data store them); a UserError naming ``images`` otherwise."""
    import torch

    want = (channels, size, size)
    shape = f"(N, {channels}, {size}, {size}) or one image ({channels}, {size}, {size})"
    x = _tensor(value, "images", f"a tensor or array of pixels {shape} (torch.stack a list "
                                 f"of images)", _image_hint(value, channels, size))
    given = tuple(x.shape)
    x = x[None] if x.dim() == 3 else x
    if x.dim() != 4 or tuple(x.shape[1:]) != want:
        hint = ""
        if given[-3:] == (size, size, channels):
            hint = "; channels last? move them first, e.g. .permute(2, 0, 1)"
        elif given == (size, size) and channels == 1:
            hint = "; one image without its channel: add it, e.g. image[None]"
        raise UserError(f"images: expected shape {shape} (data.channels, data.image_size x2), "
                        f"got {given}{hint}")
    if latents:
        if not x.is_floating_point() or x.numel() and not torch.isfinite(x).all():
            raise UserError(f"images: this network reads latents (data.latents=true), finite "
                            f"floats as its data store them, got {x.dtype} values"
                            f"{'' if x.is_floating_point() else ' (pixels?)'}")
        return x.float()
    if x.dtype == torch.uint8:
        return x.float() / 255.0
    if not x.is_floating_point():
        raise UserError(f"images: {x.dtype} pixels; pass uint8 (0..255) or floats in [0, 1]")
    x = x.float()
    if x.numel() and (not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1):
        raise UserError("images: float pixels must lie in [0, 1] (or pass uint8 0..255)")
    return x
