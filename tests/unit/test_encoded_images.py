"""Encoded images (PNG/JPEG bytes, Hugging Face image structs) and image folders: exact pixels,
named bad rows, class ids, every file once in class-mixed shards, and the read-decode path."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from dbparallel.config import DataConfig
from dbparallel.data.encoded import decode_encoded
from dbparallel.data.image_folder import image_folder_index
from dbparallel.data.images import image_batch
from dbparallel.data.shard_reader import read_shard
from dbparallel.data.shards import DataIndex
from dbparallel.errors import DataError, RowError

RGB = DataConfig(image_size=8, channels=3, num_classes=3)
GREY = DataConfig(image_size=8, channels=1, num_classes=3)


def _pixels(seed: int, channels: int, size: int = 8) -> np.ndarray:
    """(H, W) or (H, W, 3) uint8 noise."""
    shape = (size, size) if channels == 1 else (size, size, channels)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _encode(pixels: np.ndarray, fmt: str = "PNG", **options) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, fmt, **options)
    return out.getvalue()


def _chw(pixels: np.ndarray) -> np.ndarray:
    """What decode_encoded returns for one image: (C*H*W,) in (C, H, W) order."""
    return (pixels if pixels.ndim == 2 else pixels.transpose(2, 0, 1)).reshape(-1)


# ---------------------------------------------------------------------- decoding


@pytest.mark.parametrize("data", [GREY, RGB], ids=["grey", "rgb"])
def test_png_batch_decodes_to_exactly_the_pixels_written(data: DataConfig) -> None:
    images = [_pixels(i, data.channels) for i in range(5)]
    column = pa.array([_encode(p) for p in images], pa.binary())
    out = decode_encoded(column, data)
    assert out.dtype == np.uint8 and out.shape == (5, data.channels * 64)
    np.testing.assert_array_equal(out, np.stack([_chw(p) for p in images]))
    large = decode_encoded(column.cast(pa.large_binary()), data)
    np.testing.assert_array_equal(large, out)


def test_jpeg_decodes_close_to_the_pixels_written() -> None:
    ramp = np.linspace(0, 255, 8)
    smooth = np.stack([np.add.outer(ramp, ramp) / 2, np.tile(ramp, (8, 1)),
                       np.tile(ramp[:, None], (1, 8))], axis=2).astype(np.uint8)
    column = pa.array([_encode(smooth, "JPEG", quality=95)])
    out = decode_encoded(column, RGB)
    error = np.abs(out[0].astype(int) - _chw(smooth).astype(int))
    assert error.mean() < 4 and error.max() < 32


def test_struct_column_as_hugging_face_writes_images() -> None:
    images = [_pixels(i, 3) for i in range(4)]
    column = pa.array([{"bytes": _encode(p), "path": f"img_{i}.png"}
                       for i, p in enumerate(images)],
                      pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    np.testing.assert_array_equal(decode_encoded(column, RGB),
                                  np.stack([_chw(p) for p in images]))
    sliced = column.slice(1, 2)  # a batch taken out of a larger column
    np.testing.assert_array_equal(decode_encoded(sliced, RGB),
                                  np.stack([_chw(p) for p in images[1:3]]))
    no_path = pa.array([{"bytes": _encode(images[0])}], pa.struct([("bytes", pa.binary())]))
    np.testing.assert_array_equal(decode_encoded(no_path, RGB)[0], _chw(images[0]))


@pytest.mark.parametrize("threads", [2, 3, 8])
def test_threads_decode_the_same_pixels_and_name_the_first_bad_row(threads: int) -> None:
    images = [_pixels(i, 3) for i in range(100)]
    blobs = [_encode(p) for p in images]
    one = decode_encoded(pa.array(blobs, pa.binary()), RGB)
    np.testing.assert_array_equal(decode_encoded(pa.array(blobs, pa.binary()), RGB, threads),
                                  one)
    for bad_rows in ([90], [70, 20], [99, 3, 50]):  # in the last run, and in several runs
        broken = [b"not an image" if i in bad_rows else b for i, b in enumerate(blobs)]
        with pytest.raises(RowError) as caught:
            decode_encoded(pa.array(broken, pa.binary()), RGB, threads)
        assert caught.value.row == min(bad_rows)


def test_bad_rows_are_named() -> None:
    good = _encode(_pixels(0, 3))
    cases = [
        ([good, _encode(_pixels(1, 3, size=4))], 1,
         "is 4x4, expected 8x8 (data.image_size; data.resize=true cuts and resizes images to "
         "it)"),
        ([good, good, good[: len(good) // 2]], 2, "is not a readable image"),
        ([b"not an image", good], 0, "is not a readable image"),
        ([good, None], 1, "is not a readable image (null)"),
    ]
    for blobs, row, detail in cases:
        with pytest.raises(RowError) as caught:
            decode_encoded(pa.array(blobs, pa.binary()), RGB)
        assert caught.value.row == row and caught.value.column == "image"
        assert caught.value.detail.startswith(detail), caught.value.detail
        assert "BytesIO" not in caught.value.detail, caught.value.detail
        assert str(caught.value.at("x.parquet row 7")).startswith("x.parquet row 7: column")
    null_struct = pa.array([{"bytes": good, "path": None}, None],
                           pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    with pytest.raises(RowError, match="row 1 is not a readable image"):
        decode_encoded(null_struct, RGB)


def test_colour_modes_are_converted_to_data_channels() -> None:
    rgb = _pixels(3, 3)
    expected_grey = np.asarray(Image.fromarray(rgb).convert("L"))
    np.testing.assert_array_equal(decode_encoded(pa.array([_encode(rgb)]), GREY)[0],
                                  expected_grey.reshape(-1))
    grey = _pixels(4, 1)
    np.testing.assert_array_equal(decode_encoded(pa.array([_encode(grey)]), RGB)[0],
                                  np.tile(grey.reshape(-1), 3))
    rgba = np.concatenate([rgb, np.full((8, 8, 1), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(decode_encoded(pa.array([_encode(rgba)]), RGB)[0], _chw(rgb))
    palette = Image.fromarray(rgb).quantize(16)
    out = io.BytesIO()
    palette.save(out, "PNG")
    np.testing.assert_array_equal(decode_encoded(pa.array([out.getvalue()]), RGB)[0],
                                  _chw(np.asarray(palette.convert("RGB"))))
    wide = np.array([[0, 257, 32896, 65535] * 2] * 8, dtype=np.uint16)  # 16-bit grey
    np.testing.assert_array_equal(decode_encoded(pa.array([_encode(wide)]), GREY)[0],
                                  np.array([0, 1, 128, 255] * 16, np.uint8))


def test_channels_other_than_grey_or_rgb_are_refused() -> None:
    with pytest.raises(DataError, match="data.channels"):
        decode_encoded(pa.array([_encode(_pixels(0, 3))]), DataConfig(image_size=8, channels=4))


# ---------------------------------------------------------------------- image folders


def _folder(root: Path, classes: dict[str, int], channels: int = 3, seed: int = 0,
            fmt: str = "png") -> dict[str, np.ndarray]:
    """``root/<class>/<n>.<fmt>`` files; relative path -> pixels."""
    written = {}
    for k, (name, count) in enumerate(classes.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for n in range(count):
            pixels = _pixels(seed + 1000 * k + n, channels)
            rel = f"{name}/{n:03d}.{fmt}"
            Image.fromarray(pixels).save(root / rel)
            written[rel] = pixels
    return written


def _files(index: DataIndex, split: str) -> list[tuple[str, int]]:
    return [(f, label) for s in index.shards(split) for f, label in zip(s.files, s.labels,
                                                                       strict=True)]


def test_image_folder_classes_labels_and_every_file_once(tmp_path: Path) -> None:
    written = _folder(tmp_path, {"cat": 12, "ant": 9, "bee": 11})
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "bee" / ".hidden.png").write_bytes(b"")
    Image.fromarray(_pixels(9, 3)).save(tmp_path / "ant" / "UPPER.JPEG")
    data = DataConfig(source="image_folder", path=str(tmp_path), image_size=8, channels=3,
                      num_classes=3, shard_rows=8)
    index = image_folder_index(data)
    assert index.kind == "images" and index.meta["encoding"] == "encoded"
    assert index.meta["classes"] == ["ant", "bee", "cat"]
    assert index.present() == ["train"] and index.num_rows("train") == 33
    files = _files(index, "train")
    assert sorted(f for f, _ in files) == sorted([*written, "ant/UPPER.JPEG"])
    assert all(label == ["ant", "bee", "cat"].index(f.split("/")[0]) for f, label in files)
    shards = index.shards("train")
    assert [s.rows for s in shards] == [8, 8, 8, 8, 1]
    assert [s.first_row for s in shards] == [0, 8, 16, 24, 32]
    assert all(s.kind == "files" and s.uri == str(tmp_path) for s in shards)
    assert all(len(set(s.labels)) >= 2 for s in shards[:4])  # class-mixed, not class-sorted
    assert image_folder_index(data) == index  # a fixed order
    assert DataIndex.from_json(index.to_json()) == index


def test_split_folders_share_the_training_classes(tmp_path: Path) -> None:
    _folder(tmp_path / "train", {"a": 3, "b": 4, "c": 2})
    _folder(tmp_path / "test", {"c": 2, "a": 1}, seed=50)
    _folder(tmp_path / "validation", {"b": 2}, seed=90)
    data = DataConfig(source="image_folder", path=f"{tmp_path}/", image_size=8, channels=3,
                      num_classes=5, shard_rows=4)
    index = image_folder_index(data)
    assert index.meta["classes"] == ["a", "b", "c"]
    assert {s: index.num_rows(s) for s in index.present()} == \
        {"train": 9, "validation": 2, "test": 3}
    assert sorted(_files(index, "test")) == [("a/000.png", 0), ("c/000.png", 2),
                                             ("c/001.png", 2)]
    assert {s.uri for s in index.shards("test")} == {f"{tmp_path}/test"}
    _folder(tmp_path / "test", {"d": 1})
    with pytest.raises(DataError, match=r"test/d: class folder 'd' is not among the training"):
        image_folder_index(data)


def test_image_folder_errors_name_the_problem(tmp_path: Path) -> None:
    def index(path: Path, **overrides) -> DataIndex:
        return image_folder_index(DataConfig(source="image_folder", path=str(path),
                                             **{"num_classes": 10, **overrides}))

    _folder(tmp_path / "many", {f"class{k}": 1 for k in range(4)})
    with pytest.raises(DataError, match=r"data.num_classes: 3, but .* has 4 class folders "
                                        r"\(class0, class1, class2, class3\)"):
        index(tmp_path / "many", num_classes=3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no class folders with image files"):
        index(tmp_path / "empty")
    _folder(tmp_path / "text", {"a": 1})
    (tmp_path / "text" / "b").mkdir()
    (tmp_path / "text" / "b" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="text/b: class folder without image files"):
        index(tmp_path / "text")
    with pytest.raises(DataError, match="no such folder"):
        index(tmp_path / "missing")
    _folder(tmp_path / "split" / "train", {"a": 1})
    (tmp_path / "split" / "test").mkdir()
    with pytest.raises(DataError, match="split/test: no class folders"):
        index(tmp_path / "split")
    _folder(tmp_path / "loose", {"a": 1})
    Image.fromarray(_pixels(0, 3)).save(tmp_path / "loose" / "stray.png")
    with pytest.raises(DataError, match="loose/stray.png: an image outside any class folder"):
        index(tmp_path / "loose")
    _folder(tmp_path / "notrain" / "test", {"a": 1})
    with pytest.raises(DataError, match="no 'train' folder"):
        index(tmp_path / "notrain")


@pytest.mark.parametrize("uri", [False, True], ids=["path", "file-uri"])
def test_index_shards_read_and_decode_to_the_files_pixels(tmp_path: Path, uri: bool) -> None:
    written = _folder(tmp_path / "train", {"x": 5, "y": 4})
    written_test = _folder(tmp_path / "test", {"y": 2}, seed=7)
    path = f"file://{tmp_path}" if uri else str(tmp_path)
    data = DataConfig(source="image_folder", path=path, image_size=8, channels=3,
                      num_classes=2, shard_rows=4)
    index = image_folder_index(data)
    for split, files in [("train", written), ("test", written_test)]:
        seen = Counter()
        for shard in index.shards(split):
            rows = read_shard(shard)
            images, labels = image_batch(rows.table, data)
            assert images.shape == (shard.rows, 3, 8, 8)
            for i, name in enumerate(shard.files):
                expected = files[name].transpose(2, 0, 1) / 255.0
                np.testing.assert_allclose(images[i].numpy(), expected, atol=1e-7)
                assert labels[i] == ["x", "y"].index(name.split("/")[0])
                assert rows.where(i).endswith(f"{split}/{name}")
                seen[name] += 1
        assert seen == Counter(list(files))


def test_a_block_decodes_with_a_thread_per_cpu_it_reserves() -> None:
    from dbparallel.config import load_config
    from dbparallel.tasks.image_data import decode_threads

    assert decode_threads(load_config([], [])) == 1  # runtime.cpus_per_block=0.5
    assert decode_threads(load_config([], ["runtime.cpus_per_block=4"])) == 4
    assert decode_threads(load_config([], ["runtime.cpus_per_block=4",
                                           "data.decode_threads=2"])) == 2


def test_a_bad_image_is_named_by_its_row_or_its_file() -> None:
    from dbparallel.data.encoded import _decode

    with pytest.raises(RowError) as caught:
        _decode(3, b"not an image", "L", 8)
    assert str(caught.value.at("t.parquet row 9")) == (
        "t.parquet row 9: column 'image' is not a readable image (not in an image format "
        "Pillow reads)")
    assert str(caught.value.at("cats/7.png")) == (  # an image folder's file has no column
        "cats/7.png: is not a readable image (not in an image format Pillow reads)")


def test_a_path_only_image_struct_is_a_named_row_not_a_column_type_error(tmp_path: Path,
                                                                        capsys) -> None:
    """Hugging Face's ``{bytes: null, path: "x.png"}``: the file is not read, and the error
    names the file and the row (it once said "encoded images must be binary, got null")."""
    import pyarrow.parquet as pq

    from dbparallel.cli import main

    untyped = pa.array([{"bytes": None, "path": f"img{i}.png"} for i in range(3)])  # bytes: null
    with pytest.raises(RowError, match=r"row 0 has no image bytes, only a path \('img0.png'\); "
                                       r"path-only images are not read"):
        decode_encoded(untyped, GREY)
    blob = _encode(_pixels(1, 1))
    typed = pa.array([{"bytes": blob, "path": None}, {"bytes": None, "path": "b.png"}],
                     pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    with pytest.raises(RowError, match=r"row 1 has no image bytes, only a path \('b.png'\)"):
        decode_encoded(typed, GREY)
    pq.write_table(pa.table({"image": untyped, "label": pa.array([0, 1, 2])}),
                   tmp_path / "hf.parquet")
    assert main(["data", "check", str(tmp_path / "hf.parquet"), "data.image_size=8",
                 "data.channels=1", "data.num_classes=3"]) == 2
    assert "hf.parquet row 0: column 'image' has no image bytes, only a path ('img0.png')" \
        in capsys.readouterr().err


def test_a_bad_image_of_a_hugging_face_struct_is_named_by_its_path_too(tmp_path: Path,
                                                                       capsys) -> None:
    """A table of {bytes, path} structs names a bad row's row and the path it keeps (the
    file the image came from), so the image can be found; a row without a path, by row."""
    import pyarrow.parquet as pq

    from dbparallel.cli import main

    good = _encode(_pixels(0, 1))
    kind = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    images = pa.array([{"bytes": good, "path": "ok.png"}, {"bytes": good[:40], "path": "cut.png"},
                       {"bytes": b"", "path": None}], kind)
    with pytest.raises(RowError) as caught:
        decode_encoded(images, GREY)
    assert caught.value.row == 1
    assert caught.value.detail.startswith("is not a readable image (")
    assert caught.value.detail.endswith("; its path: 'cut.png'"), caught.value.detail
    with pytest.raises(RowError) as caught:
        decode_encoded(images[2:], GREY)
    assert "its path" not in caught.value.detail
    pq.write_table(pa.table({"image": images[:2], "label": pa.array([0, 1])}),
                   tmp_path / "hf.parquet")
    assert main(["data", "check", str(tmp_path / "hf.parquet"), "data.image_size=8",
                 "data.num_classes=3"]) == 2
    err = capsys.readouterr().err
    assert "hf.parquet row 1: column 'image' is not a readable image" in err
    assert "; its path: 'cut.png'" in err


def test_resize_cuts_the_centre_square_and_resizes_it() -> None:
    wide = np.zeros((16, 32, 3), np.uint8)  # (H, W, C): black sides, a white centre square
    wide[:, 8:24] = 255
    tall = np.full((40, 20), 200, np.uint8)  # grey, taller than wide: rows cut off
    tall[:10], tall[30:] = 0, 0
    photo = np.random.default_rng(0).integers(0, 256, (1200, 1600, 3), dtype=np.uint8)
    column = pa.array([_encode(wide), _encode(tall, "PNG"), _encode(photo, "JPEG")],
                      pa.binary())
    data = DataConfig(image_size=8, channels=3, resize=True)
    out = decode_encoded(column, data).reshape(3, 3, 8, 8)
    assert (out[0] == 255).all()  # only the centre square is kept, then resized
    assert (out[1] == 200).all()  # grey turned RGB, its middle rows kept
    assert out[2].std() < 20 < photo.std()  # 1600x1200 noise averaged down to 8x8
    assert decode_encoded(column[:1], DataConfig(image_size=16, channels=1, resize=True)
                          ).reshape(16, 16).tolist() == [[255] * 16] * 16
    with pytest.raises(RowError, match="row 0 is 32x16, expected 8x8"):
        decode_encoded(column, DataConfig(image_size=8, channels=3))  # not without it


def _with_orientation(pixels: np.ndarray, fmt: str, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation  # EXIF Orientation
    return _encode(pixels, fmt, exif=exif.tobytes())


def test_resize_turns_a_photo_upright_by_its_exif_orientation() -> None:
    # stored 8 rows by 16 columns, its left half white; orientation 6: a viewer turns it 90
    # degrees clockwise, so the left half is shown on top (a phone held upright)
    stored = np.zeros((8, 16), np.uint8)
    stored[:, :8] = 255
    big = np.kron(stored, np.ones((8, 8), np.uint8))  # 64x128: a JPEG decoded in draft mode
    column = pa.array([_with_orientation(stored, "PNG", 6),
                       _with_orientation(big, "JPEG", 6)], pa.binary())
    out = decode_encoded(column, DataConfig(image_size=8, channels=1, resize=True))
    shown = out.reshape(2, 8, 8)
    assert shown[0].tolist() == [[255] * 8] * 4 + [[0] * 8] * 4  # exact: no resize needed
    assert shown[1, :3].min() > 200 and shown[1, 5:].max() < 50
    # without data.resize the pixels are as stored: a square image is not turned
    square = np.zeros((8, 8), np.uint8)
    square[:, :4] = 255
    kept = decode_encoded(pa.array([_with_orientation(square, "PNG", 6)], pa.binary()),
                          DataConfig(image_size=8, channels=1))
    assert kept.reshape(8, 8).tolist() == [[255] * 4 + [0] * 4] * 8


def test_resize_turns_a_photo_upright_whatever_else_its_exif_holds() -> None:
    """A camera's EXIF with a damaged tag (its Make read as a resolution, a rational held as
    text): the orientation still turns the image, which Pillow's exif_transpose refused with
    a TypeError, writing the block again."""
    stored = np.zeros((8, 16), np.uint8)
    stored[:, :8] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # EXIF Orientation
    exif[0x010F] = "Canon"  # Make, text
    damaged = exif.tobytes().replace(b"\x01\x0f\x00\x02", b"\x01\x1a\x00\x02")  # XResolution
    assert damaged != exif.tobytes()
    out = decode_encoded(pa.array([_encode(stored, "PNG", exif=damaged)], pa.binary()),
                         DataConfig(image_size=8, channels=1, resize=True))
    assert out.reshape(8, 8).tolist() == [[255] * 8] * 4 + [[0] * 8] * 4


def test_the_headers_tell_grey_and_colour_of_a_palette_tiff() -> None:
    """A TIFF's palette is raw (planar, all reds then greens then blues), not the RGB bytes of
    a PNG's or GIF's: it was read as bytes, a TypeError."""
    from dbparallel.data.encoded import image_headers

    grey = Image.fromarray(_pixels(0, 1)).convert("P")
    colour = Image.fromarray(_pixels(1, 3)).convert("P")
    column = pa.array([_saved(grey, "TIFF"), _saved(colour, "TIFF"), _saved(colour, "PNG")],
                      pa.binary())
    assert [h[:2] for h in image_headers(column)] == [("P", 1), ("P", 3), ("P", 3)]


def _saved(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def test_a_damaged_tiff_that_trips_pillow_is_a_bad_row() -> None:
    """A TIFF whose strip offset is stored as a float: Pillow's load raises a TypeError
    (not one of the errors a damaged file raises), which is the row's error, not a traceback."""
    stored = _saved(Image.fromarray(_pixels(0, 1)), "TIFF")
    damaged = stored.replace(b"\x11\x01\x04\x00", b"\x11\x01\x0b\x00")  # StripOffsets: FLOAT
    assert damaged != stored
    with pytest.raises(RowError, match=r"row 1 is not a readable image \(TypeError: "):
        decode_encoded(pa.array([stored, damaged], pa.binary()), GREY)
