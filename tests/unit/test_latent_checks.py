"""data.latents against the checks made before training: the validation pass's stamp, the
scale warning on a column of encoded images, and the settings and options of `data encode`."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dbparallel import cli
from dbparallel.config import load_config
from dbparallel.data.sources import open_data
from dbparallel.errors import BadRows
from dbparallel.training.data_check import check_data
from dbparallel.training.data_warnings import latent_scale_warning

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


def test_latents_of_encoded_images_are_refused_naming_data_latents(tmp_path: Path,
                                                                   capsys) -> None:
    from PIL import Image

    def png(value: int) -> bytes:
        out = io.BytesIO()
        Image.new("L", (2, 2), value).save(out, "PNG")
        return out.getvalue()

    pq.write_table(pa.table({"image": pa.array([png(v) for v in range(20)], pa.binary()),
                             "label": pa.array([0] * 20, pa.int64())}),
                   tmp_path / "train.parquet")
    given = [*FLOATS, f"data.path={tmp_path}", "data.latents=true"]
    cfg = load_config([], given)
    assert latent_scale_warning(cfg, open_data(cfg.data)) is None  # the check names it
    assert cli.main(["data", "check", *given]) == 2
    err = capsys.readouterr().err
    assert "holds encoded images, pixels, and data.latents=true" in err
    assert "Traceback" not in err


OFF_CENTRE = """
import torch

def encode(images):
    return images[:, :, ::2, ::2].repeat(1, 4, 1, 1) * 0.5 + 10
"""


def test_data_encode_prints_the_shift_of_latents_off_centre(tmp_path: Path, capsys,
                                                           monkeypatch) -> None:
    (tmp_path / "off_centre.py").write_text(OFF_CENTRE)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "latents"
    assert cli.main(["data", "encode", "data.source=digits", "--encoder", "off_centre:encode",
                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    settings = re.search(r"train on them with (.*?) \(", printed).group(1).split()
    assert any(s.startswith("data.latent_shift=") for s in settings), printed
    cfg = load_config([], settings)
    assert latent_scale_warning(cfg, open_data(cfg.data)) is None


def test_a_batch_of_no_images_is_refused(tmp_path: Path, capsys) -> None:
    assert cli.main(["data", "encode", "data.source=digits", "--encoder", "m:f", "--batch", "0",
                     "--out", str(tmp_path / "out")]) == 2
    assert "--batch: must be >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert cli.main(["data", "check", "data.source=digits", "--batch", "0"]) == 2
    assert "--batch: for data encode" in capsys.readouterr().err
