"""Warnings about data settings that do not fit the data, printed once by the driver.

Images of another size than data.image_size are bad rows without data.resize=true: the sizes
of the first images are told before the validation pass, with the setting that fits them where
they share one square size, else data.resize; with it, photos far larger than they are resized
to are told that ``data reshard`` resizes them once. Data that decode
without a bad row may still be decoded or trained into something the user did not mean:
colour images with ``data.channels=1`` become grey (encoded images are converted to the
configured mode, data/encoded.py), raw colour pixel lists read in the other order than
``data.pixel_order`` become scrambled images (data/pixel_order.py), and a data.num_classes
above the data's classes makes the blocks sample and score classes that never occur. Data with
a validation split and no test split have the network scored on the training rows. The
driver prints such a warning on ``data check`` and on ``train`` alike (a Ray run's blocks never
print it), naming the key that fixes it: the colour mode, the pixel order and an image folder's
classes before the validation pass, Parquet labels after it (the pass sees every label;
training/data_check.py).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dbparallel.config import Config
from dbparallel.data.images import IMAGE_COLUMN, image_encoding
from dbparallel.data.pixel_order import looks_like
from dbparallel.data.shard_reader import read_shard
from dbparallel.data.shards import DataIndex

# the first images of a split whose headers tell grey from colour, and whose raw pixels
# tell channels first from channels last
SAMPLE_IMAGES = 16
ORDER_NAMES = {"chw": "channels-first ((C, H, W) order)", "hwc": "channels-last ((H, W, C) order)"}


def _first_images(index: DataIndex) -> pa.Array:
    """The ``image`` column of the first SAMPLE_IMAGES rows of the training split (of the
    first split, where there is none)."""
    present = index.present()
    split = "train" if "train" in present else present[0]
    shard = next(s for s in index.shards(split) if s.rows)
    read = read_shard(shard, [IMAGE_COLUMN], index.meta, limit=SAMPLE_IMAGES)
    return read.table.column(IMAGE_COLUMN).combine_chunks()


def header_warnings(cfg: Config, index: DataIndex) -> list[str]:
    """The warnings the headers of the first encoded images of the training split (of the
    first split, where there is none) give, read once: ``sizes_warning`` (without
    data.resize), ``channels_warning`` and ``resize_note`` (with it); none for data that are
    not encoded images."""
    if index.kind != "images" or index.meta.get("encoding") != "encoded":
        return []
    from dbparallel.data.encoded import image_headers  # Pillow, for encoded images only

    headers = [h for h in image_headers(_first_images(index)) if h]
    sizes = [h[2] for h in headers]
    data = cfg.data
    found = [resize_note(sizes, data.image_size, data.path) if data.resize else
             sizes_warning(sizes, data.image_size),
             channels_warning([h[:2] for h in headers], data.channels)]
    return [w for w in found if w]


RESHARD_AREA = 16  # images this many times data.image_size's area are worth resizing once


def resize_note(sizes: list[tuple[int, int]], image_size: int, path: str = "") -> str | None:
    """With data.resize: a note when most images of ``sizes`` ((width, height) each) are at
    least RESHARD_AREA times the area they are resized to. Each read of each epoch decodes
    the whole photo (a JPEG at 1/2, 1/4 or 1/8 of it at best): ``data reshard`` of ``path``
    (data.path) stores them resized once."""
    from dbparallel.shell import shell_path

    large = [(w, h) for w, h in sizes if w * h >= RESHARD_AREA * image_size ** 2]
    if not sizes or len(large) * 2 <= len(sizes):
        return None
    (w, h), _ = Counter(large).most_common(1)[0]
    data = shell_path(path) if path else "DATA"
    return (f"{len(large)} of the first {len(sizes)} images are far larger than "
            f"{image_size}x{image_size} (e.g. {w}x{h}), and data.resize=true decodes each "
            f"whole at every read: `dbparallel data reshard {data} --out DIR "
            f"data.resize=true`, with these data settings, stores them resized, once")


def sizes_warning(sizes: list[tuple[int, int]], image_size: int) -> str | None:
    """A warning when images of ``sizes`` ((width, height) each) are not
    data.image_size=``image_size`` square: without data.resize every such image is a bad
    row. Images of one square size say the setting that fits them; others, the sizes seen,
    so that a folder of photos of any size is told at once to set data.resize=true, not one
    file at a time."""
    other = [z for z in sizes if z != (image_size, image_size)]
    if not other:
        return None
    seen = Counter(sizes)
    (w, h), _ = seen.most_common(1)[0]
    if len(seen) == 1 and w == h:
        return (f"the images are {w}x{w} but data.image_size={image_size}: set "
                f"data.image_size={w}, or data.resize=true to resize them to "
                f"{image_size}x{image_size} as they are read")
    listed = ", ".join(f"{w}x{h} ({n})" for (w, h), n in seen.most_common(6))
    more = f", ... {len(seen) - 6} sizes more" if len(seen) > 6 else ""
    which = (f"none of the first {len(sizes)} images is" if len(other) == len(sizes) else
             f"{len(other)} of the first {len(sizes)} images are not")
    return (f"{which} {image_size}x{image_size} (data.image_size): {listed}{more}; set "
            f"data.resize=true to cut each to its centre square and resize it to "
            f"{image_size}x{image_size} as it is read (else each is a bad row)")


def pixel_order_warning(cfg: Config, index: DataIndex) -> str | None:
    """A warning when the first raw pixel lists of the training split (of the first split,
    where there is none) look like the other order than data.pixel_order (``looks_like``);
    None for encoded images and for data.channels other than 3 (the measured case). Rows of
    another length or with values that are not numbers are left out (the validation pass
    names them)."""
    data = cfg.data
    if index.kind != "images" or index.meta.get("encoding") != "raw" or data.channels != 3 \
            or data.latents:
        return None
    column = _first_images(index)
    size = data.channels * data.image_size ** 2
    whole = pc.fill_null(pc.equal(pc.list_value_length(column), size), False)
    flat = pc.list_flatten(column.filter(whole)).to_numpy(zero_copy_only=False)
    rows = flat.astype(np.float64).reshape(-1, size)
    seen = looks_like(rows[np.isfinite(rows).all(1)], data.channels, data.image_size)
    if seen is None or seen == data.pixel_order:
        return None
    return (f"the raw pixel lists look {ORDER_NAMES[seen]} but data.pixel_order="
            f"{data.pixel_order}: set data.pixel_order={seen}")


LATENT_SPREAD = 2.0  # scaled latents this many times wider or narrower than sigma_data


def latent_scale_warning(cfg: Config, index: DataIndex) -> str | None:
    """With data.latents: a warning when the first latents of the training split (of the
    first split, where there is none), less data.latent_shift and times data.latent_scale,
    spread more than LATENT_SPREAD times wider or narrower than noise.sigma_data, which the
    EDM preconditioning takes as the data's standard deviation (latents of a VAE are scaled
    by its scaling factor for that), or sit further than one standard deviation from 0. Rows
    of another length or with values that are not finite are left out (the validation pass
    names them)."""
    data, sigma_data = cfg.data, cfg.noise.sigma_data
    if index.kind != "images" or not data.latents:
        return None
    column = _first_images(index)
    size = data.channels * data.image_size ** 2
    if image_encoding(column.type) == "encoded" or \
            not pa.types.is_floating(column.type.value_type):
        return None  # pixels (encoded, integers): the validation pass names data.latents
    whole = pc.fill_null(pc.equal(pc.list_value_length(column), size), False)
    rows = pc.list_flatten(column.filter(whole)).to_numpy(zero_copy_only=False)
    rows = rows.astype(np.float64).reshape(-1, size)
    y = (rows[np.isfinite(rows).all(1)] - data.latent_shift) * data.latent_scale
    if not y.size:
        return None
    mean, std = float(y.mean()), float(y.std())
    spread = std > 0 and 1 / LATENT_SPREAD <= std / sigma_data <= LATENT_SPREAD
    if spread and abs(mean) <= std:
        return None
    shift = data.latent_shift + mean / data.latent_scale
    scale = data.latent_scale * sigma_data / std if std > 0 else None
    fix = [f"data.latent_shift={shift:.4g}"] if abs(mean) > std else []
    fix += [f"data.latent_scale={scale:.4g}"] if scale and not spread else []
    return (f"the latents of the first {len(y)} rows, less data.latent_shift="
            f"{data.latent_shift:g} and times data.latent_scale={data.latent_scale:g}, "
            f"have mean {mean:.3g} and standard deviation {std:.3g}, and the blocks' "
            f"preconditioning takes the data as centred with standard deviation "
            f"noise.sigma_data={sigma_data:g}: set {' and '.join(fix) or 'data.latent_scale'} "
            f"(from these rows; a VAE's own scaling_factor and shift_factor where it has "
            f"them)")


def eval_split_warning(index: DataIndex) -> str | None:
    """A warning when the data have validation rows but no test rows: the composed network is
    scored on the test split, else on the training rows (DataIndex.eval_split), so held-out
    rows named ``val`` (as many image data sets name them) would give only the blocks'
    held-out losses while the accuracy or sample scores come from rows trained on."""
    held = index.num_rows("validation")
    if not held or index.num_rows("test") or not index.num_rows("train"):
        return None
    return (f"the data have {held:,} validation row{'s' if held != 1 else ''} but no test "
            f"split: the composed network is scored on the training rows (eval_on_test=0 in "
            f"its report), and the validation rows give only each block's held-out loss; to "
            f"score it on them, name them as the test split (a test/ folder, test-* files, "
            f"or the split value 'test')")


def classes_warning(num_classes: int, names: list[str] | None = None,
                    seen: int = 0) -> str | None:
    """A warning when the data have fewer classes than data.num_classes=``num_classes``: an
    image folder's class folders ``names``, or else labels up to ``seen - 1`` (the highest
    label the validation pass saw, + 1; 0: not known)."""
    classes = len(names) if names else seen
    if not classes or classes >= num_classes:
        return None
    if names:
        have = (f"the data have {classes} class{'es' if classes > 1 else ''} "
                f"({', '.join(names[:5])}{', ...' if classes > 5 else ''})")
    else:
        have = f"the data's labels are {f'0..{classes - 1}' if classes > 1 else '0'}"
    unused = (f"labels {classes}..{num_classes - 1} never occur, yet samples and scores cover "
              f"them" if num_classes - classes > 1 else f"label {classes} never occurs, yet "
              f"samples and scores cover it")
    return f"data.num_classes={num_classes}, but {have}: {unused}; set data.num_classes={classes}"


def channels_warning(kinds: list[tuple[str, int]], channels: int) -> str | None:
    """A warning when most of the images of ``kinds`` ((Pillow mode, 1 grey or 3 colour) each)
    are not of data.channels=``channels``: they are converted, colour to grey or grey to RGB.
    A few odd images among the others are converted without a word."""
    other = [k for k in kinds if k[1] != channels]
    if channels not in (1, 3) or len(other) * 2 <= len(kinds):
        return None
    mode, have = Counter(other).most_common(1)[0][0]
    named = {"RGB": "RGB (3 channels)", "L": "grey (1 channel)"}.get(
        mode, f"{'colour' if have == 3 else 'grey'} (Pillow mode {mode})")
    if have == 3:
        return (f"the images are {named} but data.channels={channels}: they are converted "
                f"to grey; set data.channels=3 to keep colour")
    return (f"the images are {named} but data.channels={channels}: they are converted to "
            f"RGB, each grey value copied into 3 channels; set data.channels=1 to train on "
            f"them as they are stored")
