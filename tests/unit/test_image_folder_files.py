"""The files of an image folder: `dbparallel predict` reads the ones training reads (hidden
files such as macOS's ``._photo.png`` and ``.DS_Store`` and hidden folders left out, folders
that are links followed), and a file gone since the folder was indexed is named as such."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from dbparallel.config import DataConfig
from dbparallel.data.image_files import read_images
from dbparallel.data.image_folder import image_folder_index
from dbparallel.errors import DataError


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


def test_a_link_back_to_a_folder_above_is_not_followed(tmp_path: Path, caplog) -> None:
    """A link in a class folder to the data's own folder (``cat/deeper/up -> ../..``): the
    listing follows links, so every image came again at each level, under the class folder
    it sits in; each is read once, and the link is named. predict reads the same files."""
    rng = np.random.default_rng(0)
    data = tmp_path / "pets"
    for folder in (data / "cat" / "deeper", data / "dog"):
        folder.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(folder / "0.png")
    os.symlink(data, data / "cat" / "deeper" / "up")
    os.symlink(data / "dog", data / "dog" / "again")
    cfg = DataConfig(source="image_folder", path=str(data), image_size=8, channels=1,
                     num_classes=2)
    with caplog.at_level("WARNING"):
        index = image_folder_index(cfg)
    files = sorted((f, label) for s in index.shards("train") for f, label in
                   zip(s.files, s.labels, strict=True))
    assert files == [("cat/deeper/0.png", 0), ("dog/0.png", 1)]
    assert caplog.messages == [f"{data}: 2 links lead back to a folder above them, not "
                               f"followed (the images there are read once): "
                               f"cat/deeper/up, dog/again"]
    assert read_images(data, cfg)[0] == [str(data / f) for f, _ in files]


def test_a_link_to_nothing_is_warned_of(tmp_path: Path, caplog) -> None:
    """A link whose target moved is left out of the listing: an image, or a class folder
    (the labels of the classes after it shift). Each is named, training's and predict's
    listing alike, as data gone missing."""
    data = tmp_path / "pets"
    for name in ("cat", "dog"):
        (data / name).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(data / name / "0.png")
    os.symlink(tmp_path / "moved.png", data / "dog" / "1.png")
    os.symlink(tmp_path / "moved", data / "bird")  # was a class folder
    cfg = DataConfig(source="image_folder", path=str(data), image_size=8, channels=1,
                     num_classes=2)
    with caplog.at_level("WARNING"):
        assert image_folder_index(cfg).num_rows("train") == 2
        assert len(read_images(data, cfg)[0]) == 2
    assert caplog.messages == 2 * [f"{data}: 2 links to nothing left out (their target moved "
                                   f"or deleted?): bird, dog/1.png"]


def test_an_image_gone_from_a_relative_folder_is_named_as_changed_data(
        tmp_path: Path, monkeypatch) -> None:
    """A relative data.path read from where the run started, whose file is gone (its class
    folder renamed), is the data changed, not a process started elsewhere; from elsewhere it
    is the other."""
    from dbparallel.data.shard_reader import read_pieces

    for name in ("bird", "cat"):
        (tmp_path / "pets" / name).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "pets" / name / "0.png")
    monkeypatch.chdir(tmp_path)
    cfg = DataConfig(source="image_folder", path="pets", image_size=8, channels=1,
                     num_classes=2)
    shard = image_folder_index(cfg).shards("train")[0]
    (tmp_path / "pets" / "bird").rename(tmp_path / "pets" / "zebra")
    with pytest.raises(DataError) as err:
        list(read_pieces(shard))
    assert str(err.value) == (f"{os.path.join('pets', 'bird', '0.png')}: no such file (the "
                              f"data changed since the run indexed them?)")
    monkeypatch.chdir(tmp_path / "pets")
    with pytest.raises(DataError, match=f"data.path is relative, and this process runs in "
                                        f"{tmp_path / 'pets'}"):
        list(read_pieces(shard))


def test_image_files_of_a_format_not_read_are_warned_of(tmp_path: Path, caplog) -> None:
    """A .tif among the PNGs is left out like a .txt, but by name: it is data gone missing."""
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / name / "0.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "dog" / "1.tif")
    (tmp_path / "dog" / "notes.txt").write_text("not data")
    cfg = DataConfig(source="image_folder", path=str(tmp_path), image_size=8, channels=1,
                     num_classes=2)
    with caplog.at_level("WARNING"):
        assert image_folder_index(cfg).num_rows("train") == 2
    assert caplog.messages == [f"{tmp_path}: 1 image file of a format not read (.tif) left "
                               f"out: dog/1.tif; convert them to one of .png .jpg .jpeg .bmp "
                               f".gif .webp"]
    caplog.clear()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "dog" / "2.jfif", "JPEG")
    with caplog.at_level("WARNING"):
        assert image_folder_index(cfg).num_rows("train") == 2
    assert caplog.messages[0].startswith(f"{tmp_path}: 2 image files of a format not read "
                                         f"(.jfif, .tif) left out: dog/1.tif, dog/2.jfif;")


def test_a_class_folder_named_in_another_unicode_form_is_the_same_class(tmp_path: Path) -> None:
    """macOS writes 'é' decomposed (NFD): a test folder made there is the training folder's
    class, not one 'not among the training classes (chien é, ...)'."""
    import unicodedata

    for split, name in (("train", "chat"), ("train", unicodedata.normalize("NFC", "chien é")),
                        ("test", unicodedata.normalize("NFD", "chien é"))):
        (tmp_path / split / name).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / split / name / "0.png")
    cfg = DataConfig(source="image_folder", path=str(tmp_path), image_size=8, channels=1,
                     num_classes=2)
    index = image_folder_index(cfg)
    assert index.meta["classes"] == ["chat", unicodedata.normalize("NFC", "chien é")]
    assert [s.labels for s in index.shards("test")] == [(1,)]


def test_a_class_folder_of_a_splits_name_is_told_how_it_was_read(tmp_path: Path) -> None:
    """A class named 'dev' makes the folder look split: the error says which folder was
    read as a split, and where such a class goes."""
    for name in ("cat", "dev"):
        (tmp_path / name).mkdir()
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / name / "0.png")
    cfg = DataConfig(source="image_folder", path=str(tmp_path), image_size=8, channels=1,
                     num_classes=2)
    fix = ("split folders hold class folders (data.path/<split>/<class>/); a class of a "
           "split's name goes in train/<class>/ and test/<class>/, or takes another name")
    with pytest.raises(DataError) as err:
        image_folder_index(cfg)
    assert str(err.value) == (f"data.path: {tmp_path} has split folders (dev/ as "
                              f"'validation') but no 'train' folder; {fix}")
    (tmp_path / "cat").rename(tmp_path / "train")
    (tmp_path / "dog").mkdir()
    with pytest.raises(DataError) as err:
        image_folder_index(cfg)
    assert str(err.value) == (f"{tmp_path / 'dog'}: not a split folder, beside split folders "
                              f"(dev/ as 'validation', train/): with split folders every "
                              f"folder of data.path is one (train, training, validation, val, "
                              f"valid, dev, test, testing); {fix}")


def test_parquet_beside_the_images_is_named_as_left_out(tmp_path: Path, caplog) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = tmp_path / "inbox"
    data.mkdir()
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(data / "0.png")
    pq.write_table(pa.table({"image": [[0] * 64], "label": [0]}), data / "more.parquet")
    cfg = DataConfig(source="parquet", path=str(data), image_size=8, channels=1,
                     num_classes=2)
    with caplog.at_level("WARNING"):
        names, _ = read_images(data, cfg)
    assert names == [str(data / "0.png")]
    assert caplog.messages == [f"{data}: 1 Parquet file beside its images left out "
                               f"(more.parquet); give it its own path to classify its rows"]
    names, _ = read_images(data / "more.parquet", cfg)
    assert names == [f"{data / 'more.parquet'} row 0"]


def test_predict_reads_a_batch_at_a_time_and_reads_on_past_a_bad_image(tmp_path: Path) -> None:
    """A table read 3 rows at a time: each row named by its row number across batches, a bad
    row set aside with its reason and the rows around it decoded exactly."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from dbparallel.data.image_files import image_inputs, read_batches

    images = np.random.default_rng(1).integers(0, 256, (7, 8, 8), dtype=np.uint8)

    def png(i: int) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(images[i]).save(buffer, "PNG")
        return buffer.getvalue()

    table = tmp_path / "t.parquet"
    pq.write_table(pa.table({"image": [png(i) if i != 4 else b"junk" for i in range(7)]}),
                   table, row_group_size=2)
    inputs = image_inputs(table)
    assert inputs.count() == 7
    parts = list(read_batches(inputs, DataConfig(image_size=8, channels=1), 3))
    assert [p.names for p in parts] == [[f"{table} row {i}" for i in rows]
                                        for rows in ([0, 1, 2], [3, 5], [6])]
    assert [len(p.bad) for p in parts] == [0, 1, 0]
    assert parts[1].bad[0].startswith(f"{table} row 4: is not a readable image")
    pixels = torch.cat([p.pixels for p in parts])[:, 0]
    assert torch.equal(pixels, torch.from_numpy(images[[0, 1, 2, 3, 5, 6]]))
    with pytest.raises(DataError, match=r"row 4: is not a readable image"):
        read_images(table, DataConfig(image_size=8, channels=1))  # all at once: refused


def test_an_image_file_gone_since_it_was_listed_is_named_and_the_others_read(
        tmp_path: Path) -> None:
    from dbparallel.data.image_files import image_inputs, read_batches

    for name in ("a", "b", "c"):
        Image.new("L", (8, 8), 40).save(tmp_path / f"{name}.png")
    inputs = image_inputs(tmp_path)
    (tmp_path / "b.png").unlink()  # between the listing and the read
    (part,) = read_batches(inputs, DataConfig(image_size=8, channels=1), 8)
    assert part.names == [str(tmp_path / "a.png"), str(tmp_path / "c.png")]
    assert part.bad == [f"{tmp_path / 'b.png'}: cannot be read (No such file or directory)"]
    assert part.pixels.shape == (2, 1, 8, 8) and bool((part.pixels == 40).all())


def _read_column_types(tmp_path: Path, monkeypatch) -> list[pa.DataType]:
    """The image column's type as training reads a shard of files and predict a batch."""
    from dbparallel.data import image_files
    from dbparallel.data.shard_reader import read_shard

    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / name / "0.png")
    cfg = DataConfig(source="image_folder", path=str(tmp_path), image_size=8, channels=1,
                     num_classes=2)
    types = [read_shard(image_folder_index(cfg).shards("train")[0]).table["image"].type]
    decoded = image_files._decoded
    monkeypatch.setattr(image_files, "_decoded",
                        lambda column, *a: types.append(column.type) or decoded(column, *a))
    read_images(tmp_path, cfg)
    return types


def test_files_are_read_into_a_column_that_holds_over_2_gib(tmp_path: Path,
                                                            monkeypatch) -> None:
    """A shard of 4,096 photos of 600 KB, or predict's batch of 256 of 10 MB, is over 2 GiB:
    a binary column (32-bit offsets) of them is split by pyarrow and cannot be joined again
    (ArrowInvalid: offset overflow), so the files are read as large_binary. The slow test
    below reads such a shard."""
    assert _read_column_types(tmp_path, monkeypatch) == [pa.large_binary()] * 2


@pytest.mark.slow
def test_a_shard_of_files_over_2_gib_is_decoded(tmp_path: Path) -> None:
    """Three files of 800 MB (sparse, not images) in one shard: each is a named bad row, not
    an ArrowInvalid from joining the column."""
    from dbparallel.data.images import image_rows
    from dbparallel.data.shard_reader import read_shard
    from dbparallel.errors import RowError

    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
    for i in range(3):
        with open(tmp_path / "cat" / f"{i}.png", "wb") as f:
            f.truncate(800 << 20)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "dog" / "0.png")
    cfg = DataConfig(source="image_folder", path=str(tmp_path), image_size=8, channels=1,
                     num_classes=2)
    rows = read_shard(image_folder_index(cfg).shards("train")[0])
    with pytest.raises(RowError, match="is not a readable image"):
        image_rows(rows.table, cfg)
