"""The images `dbparallel predict` reads from a folder are the ones training reads from it:
hidden files (macOS's ``._photo.png``, ``.DS_Store``) and folders left out, folders that are
links followed."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from dbparallel.config import DataConfig
from dbparallel.data.image_files import read_images
from dbparallel.data.image_folder import image_folder_index


def test_predict_reads_the_images_of_a_folder_that_training_reads(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data, elsewhere = tmp_path / "pets", tmp_path / "elsewhere" / "dog"
    for folder in (data / "cat", data / "cat" / "deeper", data / ".trash", elsewhere):
        folder.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(folder / "0.png")
    (data / "cat" / "._0.png").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X")
    (data / "cat" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    os.symlink(elsewhere, data / "dog")  # a class folder that is a link

    cfg = DataConfig(source="image_folder", path=str(data), image_size=8, channels=1,
                     num_classes=2)
    trained = sorted(str(data / f) for s in image_folder_index(cfg).shards("train")
                     for f in s.files)
    names, pixels = read_images(data, cfg)
    assert names == trained == [str(data / "cat" / "0.png"), str(data / "cat" / "deeper" /
                                                                 "0.png"),
                                str(data / "dog" / "0.png")]
    assert tuple(pixels.shape) == (3, 1, 8, 8)
