from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from dbparallel.config import DataConfig
from dbparallel.data.sources import digits_table, load_table
from dbparallel.data.tables import image_table, image_tensors, read_table, write_table
from dbparallel.errors import DataError


def test_digits_is_the_embedded_default() -> None:
    images, labels = image_tensors(digits_table(), DataConfig())
    assert images.shape == (1797, 1, 8, 8)
    assert float(images.min()) == 0.0 and float(images.max()) == 1.0
    assert sorted(labels.unique().tolist()) == list(range(10))


def test_parquet_round_trip(tmp_path) -> None:
    rng = np.random.default_rng(0)
    images = rng.random((20, 1, 8, 8), dtype=np.float32)
    labels = rng.integers(0, 10, 20)
    path = str(tmp_path / "sub" / "data.parquet")
    write_table(image_table(images, labels), path)
    cfg = DataConfig(source="parquet", path=path)
    got_images, got_labels = image_tensors(load_table(cfg), cfg)
    np.testing.assert_array_equal(got_images.numpy(), images)
    np.testing.assert_array_equal(got_labels.numpy(), labels)


def _table(images: list, labels: list) -> pa.Table:
    return pa.table({"image": images, "label": labels})


GOOD = [0.5] * 64


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (_table([GOOD, [0.5] * 63], [1, 2]), r"column 'image': row 1 has 63 values, expected "
         r"64 \(data.channels x data.image_size\^2\)$"),
        (_table([GOOD, [0.5] * 192], [1, 2]), r"row 1 has 192 values, expected 64 \(data.channels "
         r"x data.image_size\^2; 192 is 3 x 8 x 8\)$"),  # RGB read as grey: the shape it has
        (_table([GOOD, [0.5] * 256], [1, 2]), r"has 256 values, .*; 256 is 1 x 16 x 16 or "
         r"4 x 8 x 8\)$"),
        (_table([GOOD, [0.5] * 1024], [1, 2]), r"; 1024 is 1 x 32 x 32 or 4 x 16 x 16\)$"),
        (_table([GOOD, [0.5] * 48], [1, 2]), r"; 48 is 3 x 4 x 4\)$"),  # not 4 x sqrt(12)
        (_table([GOOD, GOOD, GOOD], [1, 2, 10]), "column 'label': row 2 has label 10"),
        (_table([GOOD, [2.0] * 64], [1, 2]), "column 'image': row 1 has values outside"),
        (_table([GOOD, [-0.5] * 64], [1, 2]), r"row 1 has values outside \[0, 1\] for floats "
         r"\(-0.5 to -0.5: an autoencoder's latents\? set data.latents=true\)$"),
        (_table([GOOD, [0.0] * 63 + [255.0]], [1, 2]), r"row 1 has values outside \[0, 1\] "
         r"for floats \(up to 255: pixels of 0..255 stored as floats\? write them as uint8"),
        (_table([GOOD, [0.5] * 63 + [float("nan")]], [1, 2]), "row 1 has NaN or null values"),
        (_table([GOOD, [0.5] * 63 + [None]], [1, 2]), "row 1 has NaN or null values"),
        (_table([GOOD, None], [1, 2]), "column 'image': row 1 is null"),
        (_table([GOOD, GOOD], [1.0, 2.0]), "column 'label': expected integers"),
        (pa.table({"image": [GOOD]}), "column 'label' is missing"),
        (_table([], []).cast(pa.schema([("image", pa.list_(pa.float32())),
                                        ("label", pa.int64())])), "empty"),
    ],
)
def test_bad_rows_are_named(table: pa.Table, message: str) -> None:
    with pytest.raises(DataError, match=message):
        image_tensors(table, DataConfig())


def test_uint8_images_are_scaled() -> None:
    table = pa.table({"image": pa.array([[255] * 64], pa.list_(pa.uint8())), "label": [3]})
    images, _ = image_tensors(table, DataConfig())
    assert float(images.max()) == 1.0


def test_missing_path_is_one_clear_line(tmp_path) -> None:
    with pytest.raises(DataError, match="data.path: no such file"):
        read_table(str(tmp_path / "nope.parquet"))
    (tmp_path / "junk.parquet").write_bytes(b"\x00\x01 not parquet")
    with pytest.raises(DataError, match=r"not readable Parquet: [^(]*$"):  # no hint
        read_table(str(tmp_path / "junk.parquet"))


def test_a_text_file_of_another_name_is_told_how_text_is_recognised(tmp_path,
                                                                    capsys) -> None:
    from dbparallel.cli import main

    notes = tmp_path / "notes.md"
    notes.write_text("To be, or not to be, that is the question.\n" * 20)
    assert main(["data", "check", str(notes), "task=ar"]) == 2
    err = capsys.readouterr().err
    assert f"data.path: '{notes}' is not readable Parquet" in err
    assert "(it looks like text: text files are recognised by their names, ending in .txt" in err


def test_a_data_path_too_long_to_be_a_file_name_is_named(capsys) -> None:
    from dbparallel.cli import main

    long = "a" * 300  # no file name is that long: not there, not an OSError
    assert main(["data", "check", long]) == 2
    assert capsys.readouterr().err.startswith(f"dbparallel: error: data.path: cannot reach "
                                              f"'{long}'")


def test_a_text_file_read_as_parquet_is_told_data_source_text(tmp_path, capsys) -> None:
    """Its name already says text, so renaming it is no advice: data.source=parquet is."""
    from dbparallel.cli import main

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("To be, or not to be, that is the question.\n" * 20)
    assert main(["data", "check", str(corpus), "task=ar", "data.source=parquet"]) == 2
    err = capsys.readouterr().err
    assert f"data.path: '{corpus}' is not readable Parquet" in err
    assert err.rstrip().endswith("(its name says it is text: give data.source=text to read it "
                                 "as a text corpus)"), err
    assert "rename it" not in err


def test_files_with_other_column_types_are_named(tmp_path) -> None:
    import pyarrow.parquet as pq

    from dbparallel.data.parquet_index import parquet_index
    from dbparallel.errors import DataError

    pixels = [[0] * 64, [255] * 64]
    pq.write_table(pa.table({"image": pa.array(pixels, pa.list_(pa.uint8())),
                             "label": pa.array([0, 1], pa.int64())}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"image": pa.array(pixels, pa.list_(pa.uint8())),
                             "label": pa.array([0, 1], pa.int32())}), tmp_path / "b.parquet")
    with pytest.raises(DataError, match=r"b\.parquet: column 'label' is int32, but .*a\.parquet "
                                        r"has int64; every file of a data set needs the same"):
        parquet_index(str(tmp_path))


@pytest.mark.parametrize("override", ["data.image_size=16", "data.num_classes=5"])
def test_digits_of_another_shape_are_refused_naming_the_key(override: str, capsys,
                                                           tmp_path) -> None:
    from dbparallel.cli import main

    assert main(["train", "--local", override, f"run.dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert f"{override}: digits are 8x8, 1 channel, 10 classes" in err, err
    assert not (tmp_path / "run").exists()


def test_a_folder_without_parquet_files_says_what_it_holds(tmp_path, capsys) -> None:
    from PIL import Image

    from dbparallel.cli import main

    def refused(path, *overrides: str) -> str:
        assert main(["data", "check", str(path), "data.image_size=4", *overrides]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert f"no Parquet files (*.parquet, *.parq, *.pq) under '{path}'" in err
        return err

    tifs = tmp_path / "tifs"  # images of a format an image folder does not read
    for c in ("a", "b"):
        (tifs / c).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (4, 4)).save(tifs / c / f"{i}.tif")
    assert refused(tifs).endswith(": it holds 6 files: .tif (6)\n")
    pngs = tmp_path / "pngs"
    (pngs / "a").mkdir(parents=True)
    Image.new("L", (4, 4)).save(pngs / "a" / "0.png")
    assert "it holds 1 file: .png (1); a folder of images, a folder per class, is " \
        "data.source=image_folder" in refused(pngs, "data.source=parquet")
    (tmp_path / "classes" / "a").mkdir(parents=True)
    assert "it holds no files (only folders)" in refused(tmp_path / "classes")
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    table = pa.table({"image": pa.array([[0] * 16], pa.list_(pa.uint8())), "label": [0]})
    write_table(table, str(hidden / "_part-0.parquet"))
    assert "'_part-0.parquet' and any other name starting with '.' or '_' are skipped" in \
        refused(hidden)
    upper = tmp_path / "upper"
    upper.mkdir()
    write_table(table, str(upper / "PART-0.PARQUET"))
    assert "'PART-0.PARQUET' and any other name whose suffix is not in lower case are " \
        "skipped" in refused(upper)
    texts = tmp_path / "texts"  # a text corpus read as Parquet (a URI folder is, unasked)
    texts.mkdir()
    (texts / "a.txt").write_text("one document\n")
    (texts / "b.jsonl.gz").write_bytes(b"")
    assert refused(f"file://{texts}", "task=mdm").endswith(
        ": it holds 2 files: .gz (1), .txt (1); text files are a text corpus: give "
        "data.source=text (with a text task: task=mdm, ar or looped)\n")


def test_parquet_data_of_no_rows_are_refused_naming_the_path(tmp_path, capsys) -> None:
    from dbparallel.cli import main

    empty = pa.table({"image": pa.array([], pa.list_(pa.uint8())),
                      "label": pa.array([], pa.int64())})
    (tmp_path / "data").mkdir()
    for name in ("a.parquet", "b.parquet"):
        write_table(empty, str(tmp_path / "data" / name))
    assert main(["data", "check", str(tmp_path / "data"), "data.image_size=4"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        f"dbparallel: error: data.path: '{tmp_path / 'data'}' holds no rows (2 Parquet files "
        f"of 0 rows)"]


def test_an_image_file_given_as_the_data_is_told_what_an_image_data_set_is(tmp_path,
                                                                          capsys) -> None:
    from PIL import Image

    from dbparallel.cli import main

    (tmp_path / "cats").mkdir()
    Image.new("L", (4, 4)).save(tmp_path / "cats" / "0.PNG")
    assert main(["data", "check", str(tmp_path / "cats" / "0.PNG"), "data.image_size=4"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        f"dbparallel: error: data.path: '{tmp_path / 'cats' / '0.PNG'}' is an image, not a "
        f"data set: images train from a folder of class folders (data.source=image_folder, "
        f"data.path at the folder above the class folders)"]


def test_data_given_twice_on_the_command_line_are_refused_naming_both(tmp_path, capsys,
                                                                      monkeypatch) -> None:
    """Two different paths are refused; two names of the same one are read as one."""
    from dbparallel.cli import main

    one, two = str(tmp_path / "one.parquet"), str(tmp_path / "two")
    write_table(digits_table().slice(0, 10), one)
    line = [one, f"data.path={two}"]
    assert main(["data", "check", *line]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"dbparallel: error: data check: the data are given 2 times, as different paths "
        f"({', '.join(line)}); give one path (or data.path=PATH)"]
    monkeypatch.chdir(tmp_path)
    for line in ([one, one], [one, "data.source=parquet", "data.path=.//one.parquet"]):
        assert main(["data", "check", *line]) == 0, capsys.readouterr().err
        assert "train: 10 rows" in capsys.readouterr().out


def test_a_folder_of_pq_files_beside_a_text_file_is_read_as_parquet(tmp_path, capsys) -> None:
    from dbparallel.cli import main

    folder = tmp_path / "digits"
    folder.mkdir()
    write_table(digits_table().slice(0, 20), str(folder / "part-0.pq"))
    (folder / "README.txt").write_text("digits, 8x8")
    assert main(["data", "check", str(folder)]) == 0, capsys.readouterr().err
    assert "train: 20 rows" in capsys.readouterr().out


def test_a_parquet_file_rewritten_since_it_was_indexed_is_named(tmp_path) -> None:
    """Also `eval` of a finished run reads the pinned index: the file changed since then, not
    "during the run"."""
    from dbparallel.data.parquet_index import parquet_index
    from dbparallel.data.shard_reader import read_pieces

    path = tmp_path / "d.parquet"
    write_table(image_table(np.zeros((6, 1, 8, 8), np.float32), np.zeros(6, np.int64)),
                str(path))
    shard = parquet_index(str(path)).shards("train")[0]
    write_table(image_table(np.zeros((4, 1, 8, 8), np.float32), np.zeros(4, np.int64)),
                str(path))
    with pytest.raises(DataError) as err:
        list(read_pieces(shard))
    assert str(err.value) == (f"{path}: row group 0 now has 4 rows, the index says 6; the "
                              f"file changed since the run indexed it")
