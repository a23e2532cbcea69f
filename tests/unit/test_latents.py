"""data.latents: dit and vit trained on an autoencoder's latents from Parquet, with an exact,
invertible stand-in autoencoder (2x2 pixel patches to 4 channels, an orthonormal mix, scaled
and shifted), so that the samples can be decoded back to digits here."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import dbparallel
from dbparallel import cli
from dbparallel.config import ConfigError, load_config
from dbparallel.data.images import image_rows
from dbparallel.data.sources import open_data
from dbparallel.errors import DataError, RowError, UserError
from dbparallel.runtime.local import run_local
from dbparallel.tasks import build_task
from dbparallel.training.data_warnings import latent_scale_warning

ROOT = Path(__file__).resolve().parents[2]
GAIN, SHIFT = 5.0, 0.3  # the stand-in autoencoder's scale and shift of its latents
LATENT = ["data.source=parquet", "data.latents=true", "data.channels=4", "data.image_size=4",
          "model.patch_size=1"]


def _mix() -> np.ndarray:
    return np.linalg.qr(np.random.default_rng(0).normal(size=(4, 4)))[0]


def encode(pixels: np.ndarray) -> np.ndarray:
    """(N, 8, 8) pixels in [0, 1] -> (N, 4, 4, 4) latents."""
    n = len(pixels)
    patches = pixels.reshape(n, 4, 2, 4, 2).transpose(0, 2, 4, 1, 3).reshape(n, 4, 4, 4)
    return np.einsum("ij,njhw->nihw", _mix(), patches) * GAIN + SHIFT


def decode(latents: np.ndarray) -> np.ndarray:
    """``encode`` undone: (N, 4, 4, 4) -> (N, 8, 8)."""
    n = len(latents)
    patches = np.einsum("ij,nihw->njhw", _mix(), (latents - SHIFT) / GAIN)
    return patches.reshape(n, 2, 2, 4, 4).transpose(0, 3, 1, 4, 2).reshape(n, 8, 8)


def _table(latents: np.ndarray, labels: np.ndarray, kind: pa.DataType) -> pa.Table:
    flat = latents.reshape(len(latents), -1)
    return pa.table({"image": pa.array(list(flat.astype(kind.to_pandas_dtype())),
                                       type=pa.list_(kind)),
                     "label": pa.array(labels, pa.int64())})


@pytest.fixture(scope="module")
def latent_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Digits as latents: train.parquet and test.parquet, float16."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    latents = encode(digits.images / 16.0)
    root = tmp_path_factory.mktemp("latents")
    pq.write_table(_table(latents[:1500], digits.target[:1500], pa.float16()),
                   root / "train.parquet")
    pq.write_table(_table(latents[1500:], digits.target[1500:], pa.float16()),
                   root / "test.parquet")
    return root


def test_the_stand_in_autoencoder_is_exact() -> None:
    pixels = np.random.default_rng(1).random((3, 8, 8))
    assert np.allclose(decode(encode(pixels)), pixels)


def _cfg(*extra: str):
    return load_config([ROOT / "jobs" / "tiny_cpu.yaml"], ["data.path=/nowhere", *LATENT,
                                                            *extra])


@pytest.mark.parametrize(("overrides", "key"), [
    (["data.source=digits"], "data.latents: latents are read from a Parquet table"),
    (["data.latent_scale=0"], "data.latent_scale: must be a finite number > 0"),
    (["data.latent_shift=nan"], "data.latent_shift: must be a finite number"),
    (["sample.fid=true"], "sample.fid: FID scores pixels, .* set sample.decoder"),
    (["sample.decoder=vae.decode"], "sample.decoder: must be module:function"),
    (["data.latents=false", "sample.decoder=vae:decode"], "sample.decoder: decodes latents"),
    (["task=mdm", "data.seq_len=16"], "data.latents: latents are images, for task=dit or vit"),
])
def test_latent_settings_that_cannot_work_are_refused_naming_the_key(
        overrides: list[str], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        _cfg(*overrides)


def test_latents_are_read_as_stored_and_scaled_for_the_blocks() -> None:
    cfg = _cfg("data.latent_scale=0.25", "data.latent_shift=0.5")
    latents = np.random.default_rng(2).normal(size=(3, 4, 4, 4)) * 3
    rows = image_rows(_table(latents, np.array([0, 1, 2]), pa.float16()), cfg.data)
    assert rows["image"].dtype == torch.float16  # kept compact, as stored
    rows32 = image_rows(_table(latents, np.array([0, 1, 2]), pa.float32()), cfg.data)
    assert rows32["image"].dtype == torch.float32
    task = build_task(cfg)
    y = task.to_device(rows32, "cpu")["image"]
    stored = torch.from_numpy(latents.astype(np.float32))
    assert torch.allclose(y, (stored - 0.5) * 0.25)
    assert torch.allclose(task.to_stored(y), stored, atol=1e-6)  # not clamped


def test_bad_latents_are_named_by_row_or_by_data_latents() -> None:
    cfg = _cfg()
    latents = np.zeros((4, 64), dtype=np.float32)
    latents[2, 5] = np.inf
    with pytest.raises(RowError, match="has NaN, infinite or null values") as err:
        image_rows(_table(latents, np.zeros(4, dtype=np.int64), pa.float32()), cfg.data)
    assert err.value.row == 2
    pixels = pa.table({"image": pa.array([[0] * 64], pa.list_(pa.uint8())), "label": [0]})
    with pytest.raises(DataError, match=r"holds integers \(uint8\), pixels, and "
                                        r"data.latents=true reads an autoencoder's latents"):
        image_rows(pixels, cfg.data)
    encoded = pa.table({"image": pa.array([b"\x89PNG"], pa.binary()), "label": [0]})
    with pytest.raises(DataError, match="holds encoded images, pixels"):
        image_rows(encoded, cfg.data)


def test_latents_read_as_pixels_suggest_data_latents() -> None:
    cfg = load_config([], ["data.source=parquet", "data.path=/nowhere", "data.channels=4",
                           "data.image_size=4"])
    latents = np.full((1, 64), -2.0, dtype=np.float32)
    with pytest.raises(RowError, match="an autoencoder's latents\\? set data.latents=true"):
        image_rows(_table(latents, np.array([0]), pa.float32()), cfg.data)


def test_the_scale_warning_gives_the_scale_that_fits_sigma_data(latent_data: Path) -> None:
    cfg = _cfg(f"data.path={latent_data}")
    index = open_data(cfg.data)
    warning = latent_scale_warning(cfg, index)
    from sklearn.datasets import load_digits

    first = encode(load_digits().images[:16] / 16.0)
    std = float(first.astype(np.float16).astype(np.float64).std())
    assert warning is not None and f"standard deviation {std:.3g}" in warning
    assert f"set data.latent_scale={0.5 / std:.4g}" in warning
    fitted = _cfg(f"data.path={latent_data}", f"data.latent_scale={0.5 / std}")
    assert latent_scale_warning(fitted, index) is None
    off = _cfg(f"data.path={latent_data}", f"data.latent_scale={0.5 / std}",
               "data.latent_shift=-20")
    assert "set data.latent_shift=" in latent_scale_warning(off, index)


@pytest.fixture(scope="module")
def dit_run(latent_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("dit") / "run"
    cfg = load_config([ROOT / "jobs" / "tiny_cpu.yaml"],
                      [f"data.path={latent_data}", *LATENT, "data.latent_scale=0.2",
                       "train.steps=6", "sample.eval_samples=20", f"run.dir={run}"])
    run_local(cfg, None, progress=False)
    return run


def test_a_dit_of_latents_trains_scores_and_writes_latents_to_decode(dit_run: Path) -> None:
    report = json.loads((dit_run / "report.json").read_text())
    scores = report["assembly"]
    assert all(np.isfinite(scores[k]) for k in ("fd_indomain", "sample_accuracy"))
    assert not (dit_run / "samples.png").exists()
    samples = load_file(dit_run / "samples.safetensors")
    assert samples["latents"].shape == (10 * 2, 4, 4, 4)  # sample.per_class=2 of 10 classes
    assert samples["labels"].tolist() == [c for c in range(10) for _ in range(2)]
    with safe_open(dit_run / "samples.safetensors", "pt") as f:
        assert f.metadata()["latent_scale"] == "0.2"
    assert decode(samples["latents"].numpy()).shape == (20, 8, 8)

    net = dbparallel.load(dit_run)
    latents = net.sample([3, 4], steps=3)
    assert latents.shape == (2, 4, 4, 4)
    assert latents.min() < 0 or latents.max() > 1  # latents as stored, not pixels in [0, 1]


def test_the_sample_command_writes_latents_to_a_safetensors_file(dit_run: Path, tmp_path: Path,
                                                                 capsys) -> None:
    assert cli.main(["sample", str(dit_run), "--out", str(tmp_path / "s.png")]) == 2
    assert "samples are a .safetensors file" in capsys.readouterr().err
    out = tmp_path / "s.safetensors"
    assert cli.main(["sample", str(dit_run), "--out", str(out)]) == 0
    assert torch.equal(load_file(out)["latents"],
                       load_file(dit_run / "samples.safetensors")["latents"])
    assert cli.main(["predict", str(dit_run), str(out)]) == 2
    assert "--out FILE.safetensors`, which draws its latents" in capsys.readouterr().err


def test_a_vit_of_latents_predicts_from_latents(latent_data: Path, tmp_path: Path,
                                                capsys) -> None:
    run = tmp_path / "vit"
    cfg = load_config([ROOT / "jobs" / "tiny_cpu.yaml"],
                      [f"data.path={latent_data}", *LATENT, "task=vit", "data.latent_scale=0.2",
                       "train.steps=3", "train.checkpoint_every=3", f"run.dir={run}"])
    run_local(cfg, None, progress=False, only_blocks=[0, 1])
    net = dbparallel.load(run)
    table = pq.read_table(latent_data / "test.parquet").slice(0, 3)
    stored = torch.tensor(np.stack(table.column("image").to_numpy(zero_copy_only=False)),
                          dtype=torch.float32).reshape(3, 4, 4, 4)
    classes = net.predict(stored).argmax(dim=1).tolist()
    with pytest.raises(UserError, match="this network reads latents"):
        net.predict(torch.zeros(1, 4, 4, 4, dtype=torch.uint8))
    rows = tmp_path / "rows.parquet"
    pq.write_table(table, rows)
    assert cli.main(["predict", str(run), str(rows), "--json"]) == 0
    assert [json.loads(x)["class"] for x in capsys.readouterr().out.splitlines()] == classes
    image = tmp_path / "a.png"
    image.write_bytes(b"not read")
    assert cli.main(["predict", str(run), str(image)]) == 2
    assert "an image file, and this network reads latents" in capsys.readouterr().err


STAND_IN_MODULE = f"""
import numpy as np
import torch

def decode(latents):
    mix = np.linalg.qr(np.random.default_rng(0).normal(size=(4, 4)))[0]
    x = np.einsum("ij,nihw->njhw", mix, (latents.numpy() - {SHIFT}) / {GAIN})
    n = len(x)
    pixels = x.reshape(n, 2, 2, 4, 4).transpose(0, 3, 1, 4, 2).reshape(n, 1, 8, 8)
    return torch.from_numpy(pixels).float()

def as_is(latents):
    return latents


def encode(images):
    mix = np.linalg.qr(np.random.default_rng(0).normal(size=(4, 4)))[0]
    x = images.numpy()[:, 0]
    n = len(x)
    patches = x.reshape(n, 4, 2, 4, 2).transpose(0, 2, 4, 1, 3).reshape(n, 4, 4, 4)
    return torch.from_numpy(np.einsum("ij,njhw->nihw", mix, patches) * {GAIN} + {SHIFT}).float()


def oblong(images):
    return torch.zeros(len(images), 4, 2, 8)
"""


@pytest.fixture()
def decoder_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module ``standin_vae`` on sys.path with the stand-in's ``encode`` and ``decode``, and
    functions that return what no encoder or decoder may."""
    (tmp_path / "standin_vae.py").write_text(STAND_IN_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "standin_vae"


def test_the_decoder_s_output_is_checked(decoder_module: str) -> None:
    from dbparallel.training.eval.decoder import decode_latents

    latents = torch.from_numpy(encode(np.random.default_rng(3).random((3, 8, 8)))).float()
    images = decode_latents(f"{decoder_module}:decode", latents)
    assert images.shape == (3, 1, 8, 8) and 0 <= images.min() and images.max() <= 1
    with pytest.raises(UserError, match=r"sample.decoder=standin_vae:as_is: given latents of "
                                        r"shape \(3, 4, 4, 4\), it returned a tensor of shape "
                                        r"\(3, 4, 4, 4\); it must return float images"):
        decode_latents(f"{decoder_module}:as_is", latents)
    with pytest.raises(UserError, match="module 'standin_vae' has no function 'missing'"):
        decode_latents(f"{decoder_module}:missing", latents)


def test_a_decoder_that_does_not_import_stops_the_run_before_it_trains(
        latent_data: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    assert cli.main(["train", str(ROOT / "jobs" / "tiny_cpu.yaml"), "--local",
                     f"data.path={latent_data}", *LATENT, "sample.decoder=no_such_vae:decode",
                     f"run.dir={run}"]) == 2
    assert ("sample.decoder=no_such_vae:decode: cannot import 'no_such_vae' here "
            "(ModuleNotFoundError" in capsys.readouterr().err)
    assert not (run / "blocks").exists()


def test_a_decoder_draws_samples_png_and_fid_scores_decoded_latents(
        latent_data: Path, tmp_path: Path, decoder_module: str) -> None:
    from PIL import Image

    from dbparallel.training.eval.inception import network_path
    from dbparallel.training.eval.png import encode_png, grid

    try:
        network_path()
        fid = ["sample.fid=true"]
    except UserError:  # the Inception network is not installed here: samples.png alone
        fid = []
    run = tmp_path / "run"
    settings = [f"data.path={latent_data}", *LATENT, "data.latent_scale=0.2", "train.steps=6",
                "sample.eval_samples=20", f"run.dir={run}"]
    run_local(load_config([ROOT / "jobs" / "tiny_cpu.yaml"], [*settings, "train.steps=3"]),
              None, progress=False)
    assert (run / "samples.safetensors").exists()  # no decoder yet: latents
    cfg = load_config([ROOT / "jobs" / "tiny_cpu.yaml"],
                      [*settings, f"sample.decoder={decoder_module}:decode", *fid])
    run_local(cfg, None, progress=False)  # resumed to 6 steps, with the decoder
    assert not (run / "samples.safetensors").exists()
    drawn = Image.open(run / "samples.png")  # and the latents of the run before, left out
    expected = Image.open(io.BytesIO(encode_png(grid(torch.zeros(20, 1, 8, 8), rows=10),
                                                scale=8)))
    assert drawn.size == expected.size and drawn.mode == expected.mode
    scores = json.loads((run / "report.json").read_text())["assembly"]
    if fid:
        assert scores["fid_samples"] == 20 and np.isfinite(scores["fid"])


def test_data_encode_writes_the_latents_of_every_image_and_the_settings_to_train(
        decoder_module: str, tmp_path: Path, capsys) -> None:
    from sklearn.datasets import load_digits

    out = tmp_path / "latents"
    assert cli.main(["data", "encode", "data.source=digits", "data.shard_rows=500",
                     "--encoder", f"{decoder_module}:encode", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "train: 1,797 rows in 4 row groups of at most 500 rows" in printed
    table = pq.read_table(out)
    assert table.schema.field("image").type == pa.list_(pa.float16())
    digits = load_digits()
    stored = np.stack(table.column("image").to_numpy(zero_copy_only=False)).astype(np.float64)
    expected = encode(digits.images / 16.0).reshape(len(stored), -1)
    assert np.abs(stored - expected).max() < 0.01  # float16 of values up to about 10
    assert table.column("label").to_pylist() == digits.target.tolist()
    scale = 0.5 / expected.astype(np.float16).astype(np.float64).std()
    assert (f"train on them with data.source=parquet data.path={out} data.latents=true "
            f"data.channels=4 data.image_size=4 data.num_classes=10 "
            f"data.latent_scale={scale:.4g}") in printed


@pytest.mark.parametrize(("encoder", "message"), [
    ("oblong", r"--encoder standin_vae:oblong: given images of shape \(64, 1, 8, 8\), it "
               r"returned a tensor of shape \(64, 4, 2, 8\); it must return float latents "
               r"\(N, C', H', W'\), one per image, square"),
    ("nothing", "--encoder standin_vae:nothing: module 'standin_vae' has no function"),
])
def test_data_encode_names_an_encoder_that_does_not_fit_and_leaves_nothing(
        decoder_module: str, tmp_path: Path, capsys, encoder: str, message: str) -> None:
    out = tmp_path / "latents"
    assert cli.main(["data", "encode", "data.source=digits", "--encoder",
                     f"{decoder_module}:{encoder}", "--out", str(out)]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()


def test_data_encode_names_a_bad_image_and_its_options_belong_to_it(
        decoder_module: str, tmp_path: Path, capsys) -> None:
    rows = tmp_path / "images.parquet"
    good = [0.5] * 64
    pq.write_table(pa.table({"image": [good, [0.5] * 63, good, [2.0] * 64],
                             "label": [0, 1, 2, 3]}), rows)
    out = tmp_path / "latents"
    assert cli.main(["data", "encode", str(rows), "--encoder", f"{decoder_module}:encode",
                     "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "2 bad rows:" in err  # every bad image, the encoder stopped at the first
    assert f"{rows} row 1: column 'image' has 63 values, expected 64" in err
    assert f"{rows} row 3: column 'image' has values outside [0, 1]" in err
    assert not out.exists()
    assert cli.main(["data", "encode", str(rows), "--out", str(out)]) == 2
    assert "--encoder MODULE:FUNCTION is required" in capsys.readouterr().err
    assert cli.main(["data", "check", str(rows), "--encoder", "m:f"]) == 2
    assert "--encoder: for data encode" in capsys.readouterr().err


def test_a_reshard_of_latents_prints_the_settings_that_read_them(latent_data: Path,
                                                                 tmp_path: Path,
                                                                 capsys) -> None:
    out = tmp_path / "resharded"
    assert cli.main(["data", "reshard", str(latent_data), *LATENT[1:], "data.latent_scale=0.2",
                     "--out", str(out)]) == 0
    assert (f"train on them with data.source=parquet data.path={out} data.latents=true "
            f"data.channels=4 data.image_size=4 data.latent_scale=0.2 data.latent_shift=0"
            in capsys.readouterr().out)
    assert pq.read_schema(next(out.glob("train-*.parquet"))).field("image").type == \
        pa.list_(pa.float16())
