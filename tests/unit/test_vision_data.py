"""Fashion-MNIST: IDX conversion, the cached Parquet table, splits, and the missing-data error."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from dbparallel.config import DataConfig
from dbparallel.data import fashion
from dbparallel.data.sources import load_table
from dbparallel.data.splits import eval_rows, train_rows
from dbparallel.data.tables import image_tensors
from dbparallel.errors import DataError

FASHION = DataConfig(source="fashion_mnist", image_size=28)
INSTALLED = fashion.idx_files(fashion.PACKAGE_DIR) is not None


def _write_idx(path: Path, array: np.ndarray, compress: bool = True) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def _fake_fashion(directory: Path, train: int = 5, test: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, (images, labels), n in [("train", fashion.FILES["train"], train),
                                       ("test", fashion.FILES["test"], test)]:
        x = rng.integers(0, 256, (n, 28, 28))
        y = rng.integers(0, 10, n)
        _write_idx(directory / images, x, compress=split == "train")
        _write_idx(directory / labels, y, compress=split == "train")
        arrays[split] = x
        arrays[f"{split}_labels"] = y
    return arrays


def test_idx_files_convert_once_into_a_cached_table(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DBPARALLEL_CACHE", str(tmp_path / "cache"))
    arrays = _fake_fashion(tmp_path)
    table = fashion.fashion_table(str(tmp_path))
    assert table.column("split").to_pylist() == ["train"] * 5 + ["test"] * 3
    images, labels = image_tensors(train_rows(table), FASHION)
    assert images.shape == (5, 1, 28, 28)
    np.testing.assert_array_equal((images.numpy() * 255).round()[:, 0], arrays["train"])
    np.testing.assert_array_equal(labels.numpy(), arrays["train_labels"])
    _, test_labels = image_tensors(eval_rows(table), FASHION)
    np.testing.assert_array_equal(test_labels.numpy(), arrays["test_labels"])
    cached = list((tmp_path / "cache" / "fashion_mnist").glob("*.parquet"))
    assert len(cached) == 1
    converted = []
    monkeypatch.setattr(fashion, "idx_table", lambda files: converted.append(files))
    assert fashion.fashion_table(str(tmp_path)).equals(table)  # read back from the cache
    assert converted == []  # not converted again


def test_a_parquet_table_works_as_data_path(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DBPARALLEL_CACHE", str(tmp_path / "cache"))
    _fake_fashion(tmp_path)
    fashion.fashion_table(str(tmp_path))
    (parquet,) = (tmp_path / "cache" / "fashion_mnist").glob("*.parquet")
    table = load_table(DataConfig(source="fashion_mnist", image_size=28, path=str(parquet)))
    assert table.num_rows == 8


@pytest.mark.parametrize(("header", "message"), [
    (bytes([0, 0, 0x0D, 1]) + struct.pack(">I", 2), "not an IDX file of unsigned bytes"),
    (bytes([0, 0, 0x08, 1]) + struct.pack(">I", 5), "holds 2 values, its header says 5"),
])
def test_bad_idx_files_are_named(tmp_path, header, message) -> None:
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(header + b"\x01\x02")
    with pytest.raises(DataError, match=message):
        fashion.read_idx(path)


def test_mismatched_label_count_is_named(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DBPARALLEL_CACHE", str(tmp_path / "cache"))
    _fake_fashion(tmp_path)
    _write_idx(tmp_path / fashion.FILES["test"][1], np.zeros(2), compress=False)
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte holds \(2,\) labels for 3"):
        fashion.fashion_table(str(tmp_path))


def test_missing_package_says_how_to_get_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(fashion, "PACKAGE_DIR", tmp_path / "absent")
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist") as err:
        load_table(FASHION)
    assert "data.path=" in str(err.value)
    with pytest.raises(DataError, match="no such file or directory"):
        fashion.fashion_table(str(tmp_path / "nowhere"))


def test_wrong_image_size_is_a_data_error() -> None:
    with pytest.raises(DataError, match="Fashion-MNIST is 28x28"):
        load_table(DataConfig(source="fashion_mnist"))


def test_split_column_selects_rows() -> None:
    table = pa.table({"image": [[0.5] * 64] * 3, "label": [1, 2, 3],
                      "split": ["train", "test", "train"]})
    assert train_rows(table).column("label").to_pylist() == [1, 3]
    assert eval_rows(table).column("label").to_pylist() == [2]
    no_test = table.set_column(2, "split", pa.array(["train"] * 3))
    assert eval_rows(no_test).num_rows == 3  # no test rows: score on the training rows
    bad = table.set_column(2, "split", pa.array(["train", "eval", "test"]))
    with pytest.raises(DataError, match="column 'split': row 1 is 'eval'; allowed: train, "
                                        "validation, test \\(any case; also training, val, "):
        train_rows(bad)


@pytest.mark.skipif(not INSTALLED, reason="Debian package dataset-fashion-mnist is not "
                    "installed (apt-get install dataset-fashion-mnist)")
def test_the_installed_data_set_is_complete() -> None:
    table = load_table(FASHION)
    images, labels = image_tensors(train_rows(table), FASHION)
    assert images.shape == (60000, 1, 28, 28)
    assert np.bincount(labels.numpy()).tolist() == [6000] * 10
    _, test_labels = image_tensors(eval_rows(table), FASHION)
    assert np.bincount(test_labels.numpy()).tolist() == [1000] * 10
    assert float(images.min()) == 0.0 and float(images.max()) == 1.0


def test_fashion_labels_have_their_class_names_and_other_shapes_are_named(
        tmp_path, monkeypatch) -> None:
    """`dbparallel predict` prints the names (data/reshard.class_names)."""
    from dbparallel.data.reshard import class_names
    from dbparallel.data.sources import open_data
    from dbparallel.errors import DataError

    monkeypatch.setenv("DBPARALLEL_CACHE", str(tmp_path / "cache"))
    _fake_fashion(tmp_path)
    names = class_names(open_data(DataConfig(source="fashion_mnist", image_size=28,
                                             path=str(tmp_path))))
    assert len(names) == 10 and names[0] == "T-shirt/top" and names[9] == "Ankle boot"
    with pytest.raises(DataError, match=r"^data.image_size=32: Fashion-MNIST is 28x28, 1 "
                                        r"channel, 10 classes \(data.image_size=28, "):
        open_data(DataConfig(source="fashion_mnist", image_size=32, path=str(tmp_path)))
