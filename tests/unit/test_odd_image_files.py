"""Image files Pillow opens in a way of its own: their rows' errors and warnings say what the
image is and what was asked, not Pillow's own words."""

from __future__ import annotations

import io
import struct
import zlib

import pyarrow as pa
import pytest
from PIL import Image

from dbparallel.config import DataConfig
from dbparallel.data.encoded import decode_encoded, image_headers
from dbparallel.errors import RowError
from dbparallel.training.data_warnings import channels_warning

GREY = DataConfig(image_size=8, channels=1, num_classes=3)


def _saved(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def test_a_lab_image_asked_for_grey_is_a_bad_row_naming_its_mode() -> None:
    """Pillow converts LAB to RGB but not to L, and says "conversion from LAB to RGB"."""
    lab = _saved(Image.new("LAB", (8, 8), (50, 10, 20)), "TIFF")
    with pytest.raises(RowError, match=r"^column 'image': row 0 has Pillow mode 'LAB', which "
                                       r"Pillow does not convert to 'L' \(data.channels=1\); "
                                       r"store it as RGB or grey \(L\)$"):
        decode_encoded(pa.array([lab], pa.binary()), GREY)


def _png(depth: int, colour_type: int, row: bytes, size: int = 8) -> bytes:
    """A PNG written by hand: ``size`` rows of the pixels ``row`` (unfiltered)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)
    header = struct.pack(">IIBBBBB", size, size, depth, colour_type, 0, 0, 0)
    pixels = zlib.compress((b"\x00" + row) * size)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels)
            + chunk(b"IEND", b""))


def test_a_16_bit_grey_png_with_alpha_is_told_grey_though_pillow_opens_it_rgba() -> None:
    grey_alpha = _png(16, 4, bytes([0x12, 0x34, 0xFF, 0xFF]) * 8)  # colour type 4: LA
    colour_alpha = _png(16, 6, bytes(range(8)) * 8)  # colour type 6: RGBA
    headers = image_headers(pa.array([grey_alpha, colour_alpha], pa.binary()))
    assert [h[:2] for h in headers] == [("RGBA", 1), ("RGBA", 3)]
    assert channels_warning([headers[0][:2]] * 4, 1) is None
    assert decode_encoded(pa.array([grey_alpha], pa.binary()), GREY)[0].tolist() == [0x12] * 64
