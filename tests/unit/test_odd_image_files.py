"""Image files Pillow opens in a way of its own: their rows' errors and warnings say what the
image is and what was asked, not Pillow's own words."""

from __future__ import annotations

import io

import pyarrow as pa
import pytest
from PIL import Image

from dbparallel.config import DataConfig
from dbparallel.data.encoded import decode_encoded
from dbparallel.errors import RowError

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
