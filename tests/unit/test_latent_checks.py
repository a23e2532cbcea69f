"""data.latents against the checks made before training: the validation pass's stamp."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dbparallel.config import load_config
from dbparallel.data.sources import open_data
from dbparallel.errors import BadRows
from dbparallel.training.data_check import check_data

FLOATS = ["data.source=parquet", "data.channels=1", "data.image_size=2"]


def test_a_check_of_latents_does_not_pass_the_same_rows_as_pixels(tmp_path: Path) -> None:
    rows = np.full((40, 4), 0.5, dtype=np.float32)
    rows[30, 1] = 1.5  # a latent, and outside [0, 1] for a float pixel
    pq.write_table(pa.table({"image": pa.array(list(rows), pa.list_(pa.float32())),
                             "label": pa.array([0] * 40, pa.int64())}),
                   tmp_path / "train.parquet")
    latents = load_config([], [*FLOATS, f"data.path={tmp_path}", "data.latents=true"])
    index = open_data(latents.data)
    assert check_data(latents, index, progress=False).rows == 40
    pixels = load_config([], [*FLOATS, f"data.path={tmp_path}"])
    with pytest.raises(BadRows, match="row 30: column 'image' has values outside"):
        check_data(pixels, index, progress=False)
