"""data.pixel_order: raw pixel lists written channels last (``np.asarray(pil_image)
.reshape(-1)``) read as the same images as channels-first lists, on every path that reads
them; the warning when the lists look like the other order; the key in the config and in what
a run is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_image

from dbparallel.cli import main
from dbparallel.config import (
    ConfigError,
    DataConfig,
    from_dict,
    identity_diff,
    load_config,
    to_dict,
)
from dbparallel.data.image_files import read_images
from dbparallel.data.images import image_rows
from dbparallel.data.parquet_index import parquet_index
from dbparallel.data.pixel_order import looks_like, to_chw
from dbparallel.errors import RowError
from dbparallel.training.loop import BlockRun
from dbparallel.training.storage import Storage

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "jobs" / "tiny_cpu.yaml")
SIDE = 16
UINT8 = pa.uint8()
TO_HWC = ("warning: the raw pixel lists look channels-last ((H, W, C) order) but "
          "data.pixel_order=chw: set data.pixel_order=hwc")
TO_CHW = ("warning: the raw pixel lists look channels-first ((C, H, W) order) but "
          "data.pixel_order=hwc: set data.pixel_order=chw")


def photos(n: int, side: int = SIDE, seed: int = 0) -> np.ndarray:
    """(n, side, side, 3) uint8 crops of scikit-learn's two sample photos, resized."""
    rng = np.random.default_rng(seed)
    sources = [load_sample_image("china.jpg"), load_sample_image("flower.jpg")]
    out = []
    for i in range(n):
        im = sources[i % 2]
        s = int(rng.integers(40, 200))
        y, x = rng.integers(0, im.shape[0] - s), rng.integers(0, im.shape[1] - s)
        out.append(np.asarray(Image.fromarray(im[y:y + s, x:x + s]).resize((side, side))))
    return np.stack(out)


def synthetic(n: int, side: int = SIDE, seed: int = 0) -> np.ndarray:
    """(n, side, side, 3) uint8: a colour gradient with a flat disc on it."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side] / side
    out = []
    for _ in range(n):
        a = rng.uniform(-1, 1, (3, 3))
        im = np.stack([a[c, 0] * yy + a[c, 1] * xx + a[c, 2] for c in range(3)], -1) * 80 + 128
        cy, cx = rng.uniform(0, 1, 2)
        im[(yy - cy) ** 2 + (xx - cx) ** 2 < 0.06] = rng.uniform(0, 255, 3)
        out.append(np.clip(im, 0, 255).astype(np.uint8))
    return np.stack(out)


def noise(n: int, side: int = SIDE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, side, side, 3), dtype=np.uint8)


def flat_rows(hwc: np.ndarray, order: str) -> np.ndarray:
    """(N, 3*H*W) lists of the (N, H, W, 3) images in ``order``, as a user writes them."""
    images = hwc if order == "hwc" else hwc.transpose(0, 3, 1, 2)
    return images.reshape(len(images), -1)


def write(path: Path, rows: np.ndarray, kind: pa.DataType = UINT8,
          fixed: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    values = pa.array(rows.reshape(-1), kind)
    column = (pa.FixedSizeListArray.from_arrays(values, rows.shape[1]) if fixed else
              pa.ListArray.from_arrays(pa.array(np.arange(len(rows) + 1) * rows.shape[1],
                                                pa.int32()), values))
    pq.write_table(pa.table({"image": column, "label": np.arange(len(rows)) % 10}), path,
                   row_group_size=20)
    return path


def data(path: Path | str = "x", order: str = "chw", channels: int = 3) -> DataConfig:
    return DataConfig(source="parquet", path=str(path), image_size=SIDE, channels=channels,
                      pixel_order=order)


def test_to_chw_is_the_transpose_of_each_row() -> None:
    hwc = noise(3, 4)
    assert np.array_equal(to_chw(flat_rows(hwc, "hwc"), 3, 4), flat_rows(hwc, "chw"))
    assert to_chw(flat_rows(hwc, "hwc"), 3, 4).flags.c_contiguous


@pytest.mark.parametrize("kind,fixed", [(pa.uint8(), False), (pa.uint8(), True),
                                        (pa.int64(), False), (pa.float32(), True)])
def test_hwc_lists_unpack_to_the_pixels_of_the_same_chw_lists(
        tmp_path: Path, kind: pa.DataType, fixed: bool) -> None:
    """Every raw form (the compact uint8 lists, other integers, floats in [0, 1]): the
    channels-last table read with pixel_order=hwc gives the very tensor the channels-first one
    gives by default, of the same dtype."""
    hwc = photos(24)
    scale = 255.0 if pa.types.is_floating(kind) else 1
    chw_rows, hwc_rows = (flat_rows(hwc, order) / scale for order in ("chw", "hwc"))
    a = image_rows(pq.read_table(write(tmp_path / "c.parquet", chw_rows, kind, fixed)), data())
    b = image_rows(pq.read_table(write(tmp_path / "h.parquet", hwc_rows, kind, fixed)),
                   data(order="hwc"))
    assert a["image"].dtype == b["image"].dtype == (
        torch.float32 if pa.types.is_floating(kind) else torch.uint8)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    expected = torch.from_numpy(hwc.transpose(0, 3, 1, 2).reshape(24, -1).copy())
    assert torch.equal(a["image"], expected if scale == 1 else expected / 255.0)
    b["image"][0, 0] = 0  # writable, owned: the stream's windows may be written into
    # read in the other order, the same numbers are other images
    wrong = image_rows(pq.read_table(tmp_path / "h.parquet"), data())
    assert not torch.equal(wrong["image"], a["image"])


def test_one_channel_reads_the_same_in_either_order(tmp_path: Path) -> None:
    grey = noise(4)[..., 0].reshape(4, -1)
    table = pq.read_table(write(tmp_path / "g.parquet", grey))
    assert torch.equal(image_rows(table, data(channels=1))["image"],
                       image_rows(table, data(order="hwc", channels=1))["image"])


@pytest.mark.parametrize("kind", [pa.uint8(), pa.int64(), pa.float32()])
def test_a_bad_row_is_named_by_its_own_number_in_either_order(kind: pa.DataType) -> None:
    """The checks run on the rows as stored: the row named is the same with hwc (a value
    out of range, a null value among uint8 ones, a short row)."""
    rows = [list(r) for r in flat_rows(photos(8), "hwc")]
    if pa.types.is_floating(kind):
        rows = [[v / 255.0 for v in r] for r in rows]
    rows[5][7] = None if pa.types.is_uint8(kind) else 300
    table = pa.table({"image": pa.array(rows, pa.list_(kind)), "label": np.zeros(8, np.int64)})
    for order in ("chw", "hwc"):
        with pytest.raises(RowError) as err:
            image_rows(table, data(order=order))
        assert err.value.row == 5 and err.value.column == "image"
    rows[2] = rows[2][:10]
    table = pa.table({"image": pa.array(rows, pa.list_(kind)), "label": np.zeros(8, np.int64)})
    with pytest.raises(RowError, match="has 10 values, expected 768") as err:
        image_rows(table, data(order="hwc"))
    assert err.value.row == 2


def test_predict_reads_a_table_of_hwc_lists_in_the_run_s_order(tmp_path: Path) -> None:
    hwc = photos(6)
    chw_file = write(tmp_path / "c.parquet", flat_rows(hwc, "chw"))
    hwc_file = write(tmp_path / "h.parquet", flat_rows(hwc, "hwc") / 255.0, pa.float32(),
                     fixed=True)  # floats in [0, 1]
    _, a = read_images(chw_file, data())
    _, b = read_images(hwc_file, data(order="hwc"))
    assert torch.equal(a, torch.from_numpy(hwc.transpose(0, 3, 1, 2).copy()))
    assert torch.equal(a, b)


def test_a_block_trains_the_same_on_hwc_lists_read_as_hwc(tmp_path: Path) -> None:
    """The same steps of one block, on channels-first lists by default and on the same images
    as channels-last lists with pixel_order=hwc: the same losses, exactly."""
    hwc = photos(60)
    losses = []
    for order in ("chw", "hwc"):
        path = write(tmp_path / order / "d.parquet", flat_rows(hwc, order))
        cfg = load_config([TINY], [f"run.dir={tmp_path / order / 'run'}", "data.source=parquet",
                                   f"data.path={path}", "data.channels=3",
                                   f"data.image_size={SIDE}", "model.patch_size=4",
                                   f"data.pixel_order={order}", "train.batch_size=8"])
        run = BlockRun(cfg, 0, parquet_index(str(path)), Storage(cfg.run_dir))
        losses.append([])
        run.train_until(4, lambda s: losses[-1].append(s.loss))
        run.close()
    assert len(losses[0]) == 4 and losses[0] == losses[1]


@pytest.mark.parametrize("make", [photos, synthetic])
def test_natural_and_synthetic_images_look_like_their_order(make) -> None:
    for seed in range(5):
        for side in (8, 16, 32):
            hwc = make(16, side, seed)
            assert looks_like(flat_rows(hwc, "chw"), 3, side) == "chw", (seed, side)
            assert looks_like(flat_rows(hwc, "hwc"), 3, side) == "hwc", (seed, side)


def test_noise_and_flat_images_look_like_neither() -> None:
    for seed in range(5):
        for side in (4, 8, 32):
            hwc = noise(16, side, seed)
            assert looks_like(flat_rows(hwc, "chw"), 3, side) is None, (seed, side)
    assert looks_like(np.full((4, 3 * 64), 7, np.uint8), 3, 8) is None
    assert looks_like(np.zeros((0, 3 * 64)), 3, 8) is None


def test_data_check_warns_once_of_lists_in_the_other_order(tmp_path: Path, capsys) -> None:
    """hwc lists read as chw: one warning naming the key and its fix; the reverse too; none
    for either order read as itself, nor for noise in either order."""
    hwc = photos(40)
    for order, other, warning in (("hwc", "chw", TO_HWC), ("chw", "hwc", TO_CHW)):
        path = write(tmp_path / order / "d.parquet", flat_rows(hwc, order))
        argv = ["data", "check", str(path), "data.channels=3", f"data.image_size={SIDE}"]
        assert main([*argv, f"data.pixel_order={other}"]) == 0
        assert capsys.readouterr().err.count(warning) == 1
        assert main([*argv, f"data.pixel_order={order}"]) == 0
        assert "pixel_order" not in capsys.readouterr().err
    path = write(tmp_path / "noise" / "d.parquet", flat_rows(noise(40), "hwc"))
    for order in ("chw", "hwc"):
        assert main(["data", "check", str(path), "data.channels=3", f"data.image_size={SIDE}",
                     f"data.pixel_order={order}"]) == 0
        assert "pixel_order" not in capsys.readouterr().err


def test_a_bad_value_is_refused_naming_the_key(capsys) -> None:
    with pytest.raises(ConfigError, match=r"data.pixel_order: got 'HWC'; allowed: chw, hwc"):
        load_config([], ["data.pixel_order=HWC"])
    assert main(["train", "--local", "data.pixel_order=whc"]) == 2
    assert capsys.readouterr().err == ("dbparallel: error: data.pixel_order: got 'whc'; "
                                       "allowed: chw, hwc\n")


def test_the_order_is_what_a_run_is_and_a_run_from_before_the_key_resumes() -> None:
    chw = load_config([], ["data.source=parquet", "data.path=/d", "data.channels=3"])
    hwc = load_config([], ["data.source=parquet", "data.path=/d", "data.channels=3",
                           "data.pixel_order=hwc"])
    assert identity_diff(to_dict(chw), to_dict(hwc)) == ["data.pixel_order"]
    old = to_dict(chw)
    del old["data"]["pixel_order"]  # stored before the key: its lists were read as chw
    assert from_dict(old).data.pixel_order == "chw"
    assert identity_diff(old, to_dict(chw)) == []
    assert identity_diff(old, to_dict(hwc)) == ["data.pixel_order"]


@pytest.mark.slow
def test_a_run_resumes_without_the_key_and_refuses_another_order(tmp_path: Path,
                                                                 capsys) -> None:
    """A --local run on channels-first lists trains without a warning; its config.yaml as
    written before the key (none in it) resumes with the default; another order is refused
    naming the key."""
    path = write(tmp_path / "d" / "d.parquet", flat_rows(photos(40), "chw"))
    argv = ["train", TINY, "--local", f"run.dir={tmp_path / 'run'}", "data.source=parquet",
            f"data.path={path}", "data.channels=3", f"data.image_size={SIDE}",
            "model.patch_size=4", "train.checkpoint_every=2", "sample.eval_samples=10"]
    assert main([*argv, "train.steps=2"]) == 0
    assert "pixel_order" not in capsys.readouterr().err
    stored = tmp_path / "run" / "config.yaml"
    text = stored.read_text()
    assert "  pixel_order: chw\n" in text
    stored.write_text(text.replace("  pixel_order: chw\n", ""))
    assert main([*argv, "train.steps=4"]) == 0
    assert "block 0: steps=4" in capsys.readouterr().out
    assert main([*argv, "train.steps=6", "data.pixel_order=hwc"]) == 2
    assert ("holds blocks trained with other values of data.pixel_order (data.pixel_order: "
            "'chw' there, 'hwc' now)") in capsys.readouterr().err
