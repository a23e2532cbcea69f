"""Warnings about data settings that do not fit the data: encoded images of another colour
mode than data.channels or of another size than data.image_size, fewer classes than
data.num_classes, and a validation split without a test split, told once on `data check` and
on `train`."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from dbparallel.cli import main
from dbparallel.data.encoded import image_headers
from dbparallel.training.data_warnings import (
    channels_warning,
    classes_warning,
    resize_note,
    sizes_warning,
)

TINY = str(Path(__file__).resolve().parents[2] / "jobs" / "tiny_cpu.yaml")
TO_GREY = ("warning: the images are RGB (3 channels) but data.channels=1: they are converted "
           "to grey; set data.channels=3 to keep colour")


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def _images(n: int, mode: str, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).convert(mode)
            for _ in range(n)]


def test_the_headers_tell_grey_from_colour() -> None:
    rgb, grey = _images(1, "RGB")[0], _images(1, "L")[0]
    blobs = [_png(rgb), _png(rgb.convert("RGBA")), _png(grey), _png(grey.convert("LA")),
             _png(rgb.quantize(16)), _png(grey.convert("P")), _png(rgb.convert("1")), None,
             b"not an image"]
    assert [h and h[:2] for h in image_headers(pa.array(blobs, pa.binary()))] == [
        ("RGB", 3), ("RGBA", 3), ("L", 1), ("LA", 1), ("P", 3), ("P", 1), ("1", 1), None, None]


def test_most_images_of_another_mode_are_warned_of_a_few_are_not() -> None:
    assert channels_warning([("RGB", 3)] * 16, 1) == TO_GREY.removeprefix("warning: ")
    assert channels_warning([("RGB", 3)] * 16, 3) is None
    assert channels_warning([("L", 1)] * 14 + [("RGB", 3), ("RGBA", 3)], 1) is None  # odd ones
    assert channels_warning([("L", 1)] * 8 + [("RGB", 3)] * 8, 1) is None  # half: mixed data
    assert "are colour (Pillow mode RGBA) but data.channels=1" in channels_warning(
        [("RGBA", 3)] * 3, 1)
    assert channels_warning([("L", 1)] * 16, 3) == (
        "the images are grey (1 channel) but data.channels=3: they are converted to RGB, "
        "each grey value copied into 3 channels; set data.channels=1 to train on them as "
        "they are stored")
    assert channels_warning([("RGB", 3)] * 16, 4) is None  # refused when decoded
    assert channels_warning([], 1) is None


def test_rgb_images_with_grey_channels_are_warned_of_once_on_check_and_train(
        tmp_path, capsys) -> None:
    """Parquet PNG bytes and an image folder, data.channels left at 1: one warning each on
    `data check` and on `train`; none with data.channels=3."""
    images = _images(40, "RGB")
    data = tmp_path / "pq" / "train.parquet"
    data.parent.mkdir()
    labels = np.arange(40) % 10
    pq.write_table(pa.table({"image": pa.array([_png(im) for im in images], pa.binary()),
                             "label": pa.array(labels)}), data)
    folder = tmp_path / "folder"
    for i, im in enumerate(images):
        (folder / f"c{labels[i]}").mkdir(parents=True, exist_ok=True)
        im.save(folder / f"c{labels[i]}" / f"{i}.png")
    for path in (data.parent, folder):
        assert main(["data", "check", str(path)]) == 0
        assert capsys.readouterr().err.count(TO_GREY) == 1
        assert main(["data", "check", str(path), "data.channels=3"]) == 0
        assert "data.channels" not in capsys.readouterr().err
    assert main(["train", TINY, "--local", f"run.dir={tmp_path / 'run'}", "metrics.port=0",
                 "data.source=parquet", f"data.path={data.parent}", "train.steps=2"]) == 0
    assert capsys.readouterr().err.count(TO_GREY) == 1


def test_fewer_classes_than_num_classes_are_named_by_folder_or_by_label() -> None:
    assert classes_warning(10, names=["ant", "bee", "cat"]) == (
        "data.num_classes=10, but the data have 3 classes (ant, bee, cat): labels 3..9 never "
        "occur, yet samples and scores cover them; set data.num_classes=3")
    assert classes_warning(10, seen=4) == (
        "data.num_classes=10, but the data's labels are 0..3: labels 4..9 never occur, yet "
        "samples and scores cover them; set data.num_classes=4")
    assert "the data's labels are 0: labels 1..2" in classes_warning(3, seen=1)
    assert classes_warning(10, names=["cats"]).startswith(
        "data.num_classes=10, but the data have 1 class (cats): labels 1..9 never occur")
    assert "the data's labels are 0..8: label 9 never occurs, yet samples and scores cover " \
        "it; set data.num_classes=9" in classes_warning(10, seen=9)
    assert classes_warning(4, seen=4) is None and classes_warning(4, names=list("abcd")) is None
    assert classes_warning(10) is None  # nothing known: no labels, or an old check


def test_parquet_labels_short_of_num_classes_are_warned_of_once_on_check_and_train(
        tmp_path, capsys) -> None:
    """Labels 0..3 with data.num_classes left at 10: the check that sees them warns once, and
    so does a train that finds the check remembered (check_here is its pass); with
    data.num_classes=4, nothing."""
    from dbparallel.config import load_config
    from dbparallel.data.parquet_index import parquet_index
    from dbparallel.training.data_check import check_here

    rng = np.random.default_rng(0)
    data = tmp_path / "train.parquet"
    pq.write_table(pa.table({
        "image": pa.FixedSizeListArray.from_arrays(
            pa.array(rng.integers(0, 256, 40 * 64, dtype=np.uint8)), 64),
        "label": pa.array(np.arange(40) % 4)}), data)
    short = ("warning: data.num_classes=10, but the data's labels are 0..3: labels 4..9 never "
             "occur, yet samples and scores cover them; set data.num_classes=4")
    assert main(["data", "check", str(data)]) == 0
    assert capsys.readouterr().err.count(short) == 1
    cfg = load_config([TINY], [f"run.dir={tmp_path / 'run'}", "data.source=parquet",
                               f"data.path={data}"])
    check_here(cfg, parquet_index(str(data)))
    out, err = capsys.readouterr()
    assert "rows checked" not in out and err.count(short) == 1  # remembered: nothing read
    assert main(["data", "check", str(data), "data.num_classes=4"]) == 0
    assert "data.num_classes" not in capsys.readouterr().err
    folder = tmp_path / "folder"  # its class folders are warned of once, not again after
    for i, image in enumerate(_images(6, "L")):
        (folder / f"c{i % 3}").mkdir(parents=True, exist_ok=True)
        image.save(folder / f"c{i % 3}" / f"{i}.png")
    assert main(["data", "check", str(folder)]) == 0
    assert capsys.readouterr().err.count("warning: data.num_classes=10, but the data have 3 "
                                         "classes (c0, c1, c2)") == 1


def test_images_of_another_size_say_the_size_or_that_they_need_resizing() -> None:
    assert sizes_warning([(32, 32)] * 16, 32) is None
    assert sizes_warning([(32, 32)] * 16, 8) == (
        "the images are 32x32 but data.image_size=8: set data.image_size=32, or "
        "data.resize=true to resize them to 8x8 as they are read")
    mixed = sizes_warning([(20, 31)] * 3 + [(90, 60)] + [(32, 32)] * 2, 32)
    assert mixed.startswith("4 of the first 6 images are not 32x32 (data.image_size): 20x31 "
                            "(3), 32x32 (2), 90x60 (1); set data.resize=true to cut each to "
                            "its centre square and resize it to 32x32 as it is read (else "
                            "each is a bad row)"), mixed
    assert sizes_warning([(90, 60)] * 4, 64).startswith(
        "none of the first 4 images is 64x64 (data.image_size): 90x60 (4);")
    many = sizes_warning([(n, n + 1) for n in range(10, 18)], 8)
    # with data.resize: photos far larger than they are resized to are told to reshard
    assert resize_note([(1600, 1200)] * 10 + [(64, 64)] * 6, 64, "/data/my pets") == (
        "10 of the first 16 images are far larger than 64x64 (e.g. 1600x1200), and "
        "data.resize=true decodes each whole at every read: `dbparallel data reshard "
        "'/data/my pets' --out DIR data.resize=true`, with these data settings, stores them "
        "resized, once")
    assert resize_note([(1600, 1200)] * 8 + [(100, 100)] * 8, 64) is None  # half: no
    assert resize_note([(256, 256)] * 16, 64) is not None  # 16 times the area
    assert resize_note([(255, 256)] * 16, 64) is None
    assert resize_note([], 64) is None
    assert "10x11 (1)" in many and "... 2 sizes more" in many
    assert sizes_warning([], 8) is None


def _photo(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_a_folder_of_photos_of_any_size_is_told_before_its_bad_files(
        tmp_path, capsys) -> None:
    """Photos of mixed sizes: one warning listing their sizes, then every bad file named with
    its path, exit code 2; photos of one square size: the setting that fits them."""
    rng = np.random.default_rng(0)
    mixed, square = tmp_path / "mixed", tmp_path / "square"
    for i, (w, h) in enumerate([(20, 31), (90, 60), (16, 16), (64, 48)] * 3):
        for folder, size in ((mixed, (w, h)), (square, (16, 16))):
            (folder / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
            _photo(rng, *size).save(folder / f"c{i % 2}" / f"{i}.{'png' if i % 3 else 'jpg'}")
    keys = ["data.channels=3", "data.num_classes=2"]
    assert main(["data", "check", str(mixed), "data.image_size=16", *keys]) == 2
    err = capsys.readouterr().err
    assert err.count("warning: 9 of the first 12 images are not 16x16 (data.image_size): ") == 1
    assert "set data.resize=true" in err
    assert "error: 9 bad rows:" in err
    bad = re.findall(r"\n  (\S+): is (\d+)x(\d+), expected 16x16 \(data.image_size; "
                     r"data.resize=true cuts and resizes images to it\)", err)
    assert len(bad) == 9, err  # every one, each named by its file
    for path, w, h in bad:
        assert Path(path).parent.parent == mixed and Image.open(path).size == (int(w), int(h))
    assert main(["data", "check", str(square), *keys]) == 2  # data.image_size left at 8
    assert "warning: the images are 16x16 but data.image_size=8: set data.image_size=16" in \
        capsys.readouterr().err
    assert main(["data", "check", str(square), "data.image_size=16", *keys]) == 0
    assert "data.image_size" not in capsys.readouterr().err
    # read with data.resize=true, the mixed photos check, train and are predicted whole
    assert main(["data", "check", str(mixed), "data.image_size=16", "data.resize=true",
                 *keys]) == 0
    assert "warning" not in capsys.readouterr().err
    run = tmp_path / "run"
    assert main(["train", "--local", "task=vit", "data.source=image_folder", f"data.path={mixed}",
                 "data.image_size=16", "data.resize=true", *keys, "model.depth=2",
                 "model.blocks=2", "train.steps=2", "train.warmup_steps=1", "metrics.port=0",
                 "sample.eval_samples=10", f"run.dir={run}"]) == 0
    capsys.readouterr()
    assert main(["predict", str(run), str(mixed), "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()  # one JSON object per image
    assert len(lines) == 12 and all(json.loads(line)["name"] in ("c0", "c1") for line in lines)


def test_a_validation_split_without_a_test_split_says_the_score_is_on_training_rows(
        tmp_path, capsys) -> None:
    """train/ and val/ folders (as ImageNet lays them out): the network would be scored on
    the training rows, which the user is told once; with a test/ folder, nothing."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 4)):
        for i in range(n):
            (tmp_path / split / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
            _photo(rng, 8, 8).save(tmp_path / split / f"c{i % 2}" / f"{i}.png")
    keys = ["data.channels=3", "data.num_classes=2"]
    assert main(["data", "check", str(tmp_path), *keys]) == 0
    assert capsys.readouterr().err.count(
        "warning: the data have 4 validation rows but no test split: the composed network is "
        "scored on the training rows (eval_on_test=0 in its report)") == 1
    (tmp_path / "val").rename(tmp_path / "test")
    assert main(["data", "check", str(tmp_path), *keys]) == 0
    assert capsys.readouterr().err == ""
