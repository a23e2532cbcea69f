"""dbparallel.encode: an image data set's latents by a function of the program's own (or a
"module:function"), with the settings that train on them."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

import dbparallel
from dbparallel.cli import main
from dbparallel.errors import DataError, UserError

# the path in this process; the one on a Ray instance the program joined: tests/ray
pytestmark = pytest.mark.usefixtures("not_joined")

SETTINGS = {"data.image_size": 8, "data.channels": 3, "data.num_classes": 10,
            "data.shard_rows": 16}


def _data(path: Path, bad: tuple[int, ...] = ()) -> Path:
    """100 rows of 3x8x8 uint8 pixels, 3 of 4 training rows (null images at ``bad``)."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (100, 192), dtype=np.uint8)
    images = [None if i in bad else row.tolist() for i, row in enumerate(pixels)]
    path.mkdir(parents=True)
    pq.write_table(pa.table({"image": pa.array(images, pa.list_(pa.uint8())),
                             "label": pa.array(rng.integers(0, 10, 100)),
                             "split": pa.array(np.where(np.arange(100) % 4 == 3, "test",
                                                        "train"))}),
                   path / "data.parquet", row_group_size=30)
    return path


class Codec(torch.nn.Module):
    """An autoencoder's encoder as a program holds one: a module with weights."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 2, stride=2)
        torch.nn.init.constant_(self.conv.weight, 0.25)
        torch.nn.init.constant_(self.conv.bias, 3.0)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.conv(images)


def test_a_program_s_own_encoder_writes_latents_and_the_settings_that_train_on_them(
        tmp_path, capsys) -> None:
    data, out = _data(tmp_path / "data"), tmp_path / "latents"
    codec = Codec()
    got = dbparallel.encode(data, codec.encode, out, overrides=SETTINGS)
    assert got["files"] == ["train-00000.parquet", "test-00000.parquet"]
    assert got["rows"] == {"train": 75, "test": 25} and got["shape"] == [4, 4, 4]
    with torch.no_grad():
        images = torch.from_numpy(np.stack(pq.read_table(data).column("image").to_numpy(
            zero_copy_only=False)).astype(np.float32).reshape(-1, 3, 8, 8) / 255)
        stored = codec.encode(images).numpy().astype(np.float16).astype(np.float64)
    assert got["mean"] == pytest.approx(stored.mean(), rel=1e-9)  # of every row written
    assert got["std"] == pytest.approx(stored.std(), rel=1e-6)
    settings = got["settings"]
    assert settings["data.path"] == str(out) and settings["data.latents"] is True
    assert (settings["data.channels"], settings["data.image_size"]) == (4, 4)
    assert settings["data.latent_shift"] == pytest.approx(got["mean"], rel=1e-5)  # off centre
    assert settings["data.latent_scale"] == pytest.approx(0.5 / got["std"], rel=1e-3)
    # the settings are overrides that train: the data check of a run on them passes
    items = [f"{k}={str(v).lower() if isinstance(v, bool) else v}"
             for k, v in settings.items()]
    capsys.readouterr()
    assert main(["data", "check", *items]) == 0
    assert "train: 75 rows" in capsys.readouterr().out


def test_an_encoder_named_module_function_writes_the_same_files(tmp_path, monkeypatch) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "api_codec.py").write_text(
        "import torch.nn.functional as F\n"
        "def encode(images):\n    return F.avg_pool2d(images, 2) * 2 - 1\n")
    monkeypatch.syspath_prepend(str(code))
    data = _data(tmp_path / "data")
    named = dbparallel.encode(data, "api_codec:encode", tmp_path / "a", overrides=SETTINGS,
                              dtype="float32")
    given = dbparallel.encode(data, lambda x: F.avg_pool2d(x, 2) * 2 - 1, tmp_path / "b",
                              overrides=SETTINGS, dtype="float32")
    assert named["files"] == given["files"]
    for name in named["files"]:
        assert pq.read_table(tmp_path / "a" / name).equals(pq.read_table(tmp_path / "b" / name))
    assert pq.read_schema(tmp_path / "a" / named["files"][0]).field("image").type == \
        pa.list_(pa.float32())


def test_bad_arguments_and_a_bad_encoder_are_named_and_leave_nothing(tmp_path) -> None:
    data, out = _data(tmp_path / "data"), tmp_path / "latents"

    def oblong(images: torch.Tensor) -> torch.Tensor:
        return images[:, :, :2, :]

    cases = [({"batch": 0}, UserError, "batch: images per encoder call, an int >= 1; got 0"),
             ({"dtype": "bfloat16"}, UserError, "dtype: .* float16 or float32; got 'bfloat16'"),
             ({"encoder": 3}, UserError, "encoder: a function or 'module:function', got int"),
             ({"device": 0}, UserError, r"device: expected cpu, cuda or cuda:N \(a string\), "
                                        "got int 0"),  # was the CPU, as nothing asked
             ({"encoder": oblong}, UserError,
              r"encoder=test_bad_arguments.*oblong: given images of shape \((\d+), 3, 8, 8\), "
              r"it returned a tensor of shape \(\1, 3, 2, 8\)"),
             ({"encoder": "no_such_module_here:encode"}, UserError,
              "encoder=no_such_module_here:encode: cannot import")]
    for given, kind, match in cases:
        with pytest.raises(kind, match=match):
            dbparallel.encode(**{"data": data, "encoder": torch.nn.Identity(), "out": out,
                                 "overrides": SETTINGS, **given})
        assert not out.exists()
    bad = _data(tmp_path / "bad", bad=(5, 40))
    with pytest.raises(DataError, match=r"2 bad rows:\n.*row 5: .*\n.*row 40: "):
        dbparallel.encode(bad, Codec().encode, out, overrides=SETTINGS)
    assert not out.exists()
    out.mkdir()
    (out / "kept.txt").write_text("x")
    for where, problem in ((out, "is not empty"), (out / "kept.txt", "is a file"),
                           (data / "latents", "inside data.path")):
        with pytest.raises(UserError, match=f"^out={re.escape(repr(str(where)))}: {problem}"):
            dbparallel.encode(data, Codec().encode, where, overrides=SETTINGS)
    assert [p.name for p in out.iterdir()] == ["kept.txt"]
