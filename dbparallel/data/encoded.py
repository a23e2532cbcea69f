"""Encoded images (PNG, JPEG, anything Pillow reads) decoded into uint8 pixels.

The column is binary (one encoded file per row), or a struct with a ``bytes`` field (and an
optional ``path``) as Hugging Face ``datasets`` writes images. A struct row with a path and
no bytes is a bad row: the file a path names is not read (it is relative to wherever the
table was written, and a block reads the table only). Every image must already be
``data.image_size`` pixels square, and a different size is a bad row, so that the pixels a
block trains on are the pixels stored; unless ``data.resize`` is set, which turns each image
upright by its EXIF orientation (as a photo viewer shows it), cuts it to its centre square and
resizes that to ``data.image_size`` (bicubic). Colour modes are converted to
``data.channels`` (1: Pillow's "L", ITU-R 601-2 luma; 3: "RGB"; alpha is dropped; an
animated image gives its first frame), which suits
a few odd images; ``image_headers`` tells from the headers whether the images themselves are
grey or colour, so that a data.channels that does not match them is warned about.
"""

from __future__ import annotations

import io
import re
import struct
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
from PIL import ExifTags, Image

from dbparallel.config import DataConfig
from dbparallel.errors import DataError, RowError

IMAGE_COLUMN = "image"
MODES = {1: "L", 3: "RGB"}  # data.channels -> the Pillow mode decoded into
WIDE_GREY = ("I;16", "I;16L", "I;16B", "I;16N")  # 16-bit grey; Pillow's convert would clip
# what Pillow raises for bytes it cannot decode (plugins differ: truncation is OSError, some
# headers raise SyntaxError or struct.error, an absurd size DecompressionBombError)
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error,
                 Image.DecompressionBombError)
MIN_ROWS_PER_THREAD = 16  # a batch of fewer rows a thread is decoded by fewer threads


def image_mode(channels: int) -> str:
    """The Pillow mode ``channels`` decode into; DataError naming data.channels otherwise."""
    if channels not in MODES:
        raise DataError(f"data.channels: encoded images decode to 1 (grey) or 3 (RGB) "
                        f"channels, got {channels}")
    return MODES[channels]


def _encoded_bytes(column: pa.Array | pa.ChunkedArray
                   ) -> tuple[list[bytes | None], list[str | None] | None]:
    """The encoded file of every row (None for a null row) of a binary column or of a
    struct column's ``bytes`` field, and the struct's ``path`` of every row (None: no such
    field). The files a path names are not read: a null row with a path is a bad row."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    kind = column.type
    paths = None
    if pa.types.is_struct(kind):
        if kind.get_field_index("bytes") < 0:
            raise DataError(f"column {IMAGE_COLUMN!r}: a struct of encoded images needs a "
                            f"'bytes' field, got {kind}")
        # flatten(), unlike field(), applies the struct's offset and its nulls to the child
        fields = column.flatten()
        if kind.get_field_index("path") >= 0:
            paths = fields[kind.get_field_index("path")].to_pylist()
        column = fields[kind.get_field_index("bytes")]
        if pa.types.is_null(column.type):  # no row has bytes (a table written untyped)
            column = pa.nulls(len(column), pa.binary())
        kind = column.type
    if not (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)):
        raise DataError(f"column {IMAGE_COLUMN!r}: encoded images must be binary, got {kind}")
    return column.to_pylist(), paths


def image_headers(column: pa.Array | pa.ChunkedArray
                  ) -> list[tuple[str, int, tuple[int, int]] | None]:
    """(Pillow mode, 1 for grey or 3 for colour, (width, height)) of every row's image, read
    from its header; None for a row without a readable image."""
    blobs, _ = _encoded_bytes(column)
    headers: list[tuple[str, int, tuple[int, int]] | None] = []
    for blob in blobs:
        try:
            with Image.open(io.BytesIO(blob or b"")) as img:  # the header: nothing decoded
                headers.append((img.mode, _channels_of(img), img.size))
        except DECODE_ERRORS:
            headers.append(None)
    return headers


def _channels_of(img: Image.Image) -> int:
    if img.mode in ("P", "PA"):
        palette = img.palette.palette if img.palette is not None else b""
        if img.palette is not None and img.palette.rawmode:  # e.g. a TIFF's, planar
            _load(img)
            palette = bytes(img.getpalette("RGB") or [])
        rgb = np.frombuffer(palette[:len(palette) // 3 * 3], np.uint8).reshape(-1, 3)
        return 1 if (rgb == rgb[:, :1]).all() else 3
    return 1 if Image.getmodebase(img.mode) == "L" or _stored_grey(img) else 3


def _stored_grey(img: Image.Image) -> bool:
    """Whether the file stores grey pixels in another mode than Pillow's: a 16-bit grey PNG
    with alpha opens as RGBA, its pixels unpacked from "LA;16B" (the tile's raw mode)."""
    args = img.tile[0].args if img.tile else None
    raw = args[0] if isinstance(args, tuple) and args else args
    return isinstance(raw, str) and raw.split(";")[0] in ("L", "LA", "La")


def _load(img: Image.Image) -> None:
    """``img`` decoded; what else a plugin raises for damaged bytes is an OSError too (a TIFF
    whose strip offset is a fraction: a TypeError from Pillow's seek)."""
    try:
        img.load()
    except DECODE_ERRORS:
        raise
    except Exception as err:  # the bytes are not an image Pillow can decode
        raise OSError(f"{type(err).__name__}: {err}") from None


def decode_encoded(column: pa.Array | pa.ChunkedArray, data: DataConfig,
                   threads: int = 1) -> np.ndarray:
    """Pixels (N, C*H*W) uint8 in (C, H, W) order of a batch of encoded images; RowError
    names the first row that is null, unreadable or not data.image_size square. ``threads``
    decode consecutive runs of rows at once (Pillow decodes without holding the GIL)."""
    mode, c, s = image_mode(data.channels), data.channels, data.image_size
    fit = bool(data.resize)
    blobs, paths = _encoded_bytes(column)
    out = np.empty((len(blobs), c * s * s), dtype=np.uint8)
    # the lowest bad row a run has met so far: the rows after it are not needed (this raises
    # it), so the runs of later rows stop there; a race between two runs lowering it leaves it
    # at one of their bad rows, which is all a run needs to stop
    first_bad = [len(blobs)]

    def run(start: int, stop: int) -> RowError | None:
        """Rows [start, stop) into ``out``; the first bad one's error, if any."""
        for row in range(start, stop):
            if row > first_bad[0]:
                return None
            path = paths[row] if paths is not None else None
            try:
                pixels = _decode(row, blobs[row], mode, s, path, fit)  # (H, W) or (H, W, C)
            except RowError as err:
                first_bad[0] = min(first_bad[0], row)
                if path is None or blobs[row] is None:
                    return err
                # a Hugging Face image struct keeps the file's name: say which image it was
                return RowError(row, IMAGE_COLUMN, f"{err.detail}; its path: {path!r}")
            if c == 1:
                out[row] = pixels.reshape(-1)
            else:
                out[row].reshape(c, s, s)[...] = pixels.transpose(2, 0, 1)
        return None

    threads = max(1, min(threads, len(blobs) // MIN_ROWS_PER_THREAD))
    bounds = np.linspace(0, len(blobs), threads + 1).astype(int)
    if threads == 1:
        errors = [run(0, len(blobs))]
    else:
        with ThreadPoolExecutor(threads, thread_name_prefix="decode") as pool:
            errors = list(pool.map(run, bounds[:-1], bounds[1:]))
    bad = [e for e in errors if e is not None]
    if bad:  # each run stopped at its own first bad row: the lowest is the first of all
        raise min(bad, key=lambda e: e.row)
    return out


RESIZE_HINT = "data.resize=true cuts and resizes images to it"  # what a size error offers


def trained_size_hint(text: str, size: int, option: str = "") -> str:
    """A size error's ``text`` for a network already trained, whose data.resize is fixed:
    the images must be resized to its ``size`` first (or, where the command has one, by
    ``option``)."""
    by = f", or pass {option} to cut and resize them as data.resize does" if option else ""
    return text.replace(RESIZE_HINT, f"the network takes {size}x{size} images: resize them "
                                     f"to it first{by}")


def _decode(row: int, blob: bytes | None, mode: str, size: int,
            path: str | None = None, fit: bool = False) -> np.ndarray:
    """The pixels of one image, (H, W) or (H, W, C) uint8 in ``mode``. Where ``fit``
    (data.resize), the image is turned upright by its EXIF orientation, and one of another
    size than ``size`` square is cut to its centre square and resized; without it such an
    image is a RowError, and the pixels are as stored."""
    if blob is None and path is not None:
        raise RowError(row, IMAGE_COLUMN, f"has no image bytes, only a path ({path!r}); "
                                          f"path-only images are not read: the table must "
                                          f"hold each image's bytes")
    if blob is None:
        raise RowError(row, IMAGE_COLUMN, "is not a readable image (null)")
    try:
        with Image.open(io.BytesIO(blob)) as img:
            if img.size != (size, size) and not fit:  # from the header, before decoding
                w, h = img.size
                raise RowError(row, IMAGE_COLUMN,
                               f"is {w}x{h}, expected {size}x{size} (data.image_size; "
                               f"{RESIZE_HINT})")
            if img.size != (size, size):  # a JPEG decoded at 1/2, 1/4 or 1/8 where that
                img.draft(None, (size, size))  # still holds the square: far less to decode
            _load(img)
            # as a viewer shows it: a phone photo's EXIF orientation applied
            pixels = _in_mode(row, _upright(img) if fit else img, mode)
        if pixels.shape[:2] != (size, size):  # its centre square, then resized
            h, w = pixels.shape[:2]
            side = min(h, w)
            top, left = (h - side) // 2, (w - side) // 2
            square = Image.fromarray(pixels[top:top + side, left:left + side])
            pixels = np.asarray(square.resize((size, size), Image.Resampling.BICUBIC))
        return pixels
    except RowError:  # a DataError, so a ValueError: not an unreadable file
        raise
    except DECODE_ERRORS as err:
        reason = re.sub(r"cannot identify image file <_io\.BytesIO object at 0x[0-9a-f]+>",
                        "not in an image format Pillow reads", str(err))
        reason = re.sub(r"<_io\.BytesIO object at 0x[0-9a-f]+>", "the bytes", reason)
        raise RowError(row, IMAGE_COLUMN, f"is not a readable image ({reason})") from None


# EXIF orientation -> the transpose that turns the image upright (as ImageOps.exif_transpose)
UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
           4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
           6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}


def _upright(img: Image.Image) -> Image.Image:
    """``img`` turned by its EXIF orientation. Not ImageOps.exif_transpose: it writes the
    EXIF block again without the tag, and a damaged tag elsewhere in it then raises a
    TypeError, though the pixels and the orientation read well."""
    orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
    method = UPRIGHT.get(orientation) if isinstance(orientation, int) else None
    return img.transpose(method) if method is not None else img


def _in_mode(row: int, img: Image.Image, mode: str) -> np.ndarray:
    if img.mode == mode:
        return np.asarray(img)
    if img.mode in WIDE_GREY:  # 0..65535 -> 0..255, rounded (x * 255 / 65535 = x / 257)
        grey = ((np.asarray(img).astype(np.uint32) + 128) // 257).astype(np.uint8)
        return grey if mode == "L" else np.repeat(grey[:, :, None], 3, axis=2)
    if img.mode in ("I", "F"):
        raise RowError(row, IMAGE_COLUMN, f"has 32-bit pixels (Pillow mode {img.mode!r}); "
                                          f"store 8- or 16-bit images")
    try:
        return np.asarray(img.convert(mode))
    except ValueError:  # Pillow's message names the mode it converts through (LAB: "to RGB")
        raise RowError(row, IMAGE_COLUMN,
                       f"has Pillow mode {img.mode!r}, which Pillow does not convert to "
                       f"{mode!r} (data.channels={len(mode)}); store it as RGB or grey (L)"
                       ) from None
