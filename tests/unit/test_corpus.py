"""Text corpora tokenized into token files: rows, splits, the content-keyed cache, BPE, memory."""

from __future__ import annotations

import json
import os
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dbparallel.config import ConfigError, DataConfig
from dbparallel.data import text, text_files
from dbparallel.data.corpus import corpus_index
from dbparallel.data.shards import SPLITS, DataIndex
from dbparallel.data.split_reader import iter_split
from dbparallel.data.tokenizer import CharTokenizer, load_tokenizer
from dbparallel.errors import DataError


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DBPARALLEL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# The character rows of the in-memory text tables this project used before (sequence_table,
# vocabulary, encode of data/text.py until the corpus): the reference the corpus must match.
def reference_rows(works: list[str], seq_len: int,
                   splits: list[str] | None = None) -> tuple[dict[str, list[str]], str]:
    if splits is None and len(works) >= text.WORK_PERIOD:
        splits = text.work_splits(len(works))
    rows: dict[str, list[str]] = {s: [] for s in SPLITS}

    def add(body: str, split: str) -> None:
        rows[split] += [body[k * seq_len:(k + 1) * seq_len] for k in range(len(body) // seq_len)]

    for i, body in enumerate(works):
        if splits is not None:
            add(body, splits[i])
            continue
        a, b = (int(len(body) * c) for c in text.POSITION_CUTS)
        for part, split in ((body[:a], "train"), (body[a:b], "validation"), (body[b:], "test")):
            add(part, split)
    return rows, "".join(sorted(set("".join(sum(rows.values(), [])))))


def token_ids(index: DataIndex, split: str) -> np.ndarray:
    parts = [np.asarray(r.table["tokens"].combine_chunks().flatten())
             for r in iter_split(index, split)]
    return np.concatenate(parts).reshape(-1, index.meta["seq_len"])


def assert_matches(index: DataIndex, works: list[str], seq_len: int,
                   splits: list[str] | None = None) -> None:
    rows, vocab = reference_rows(works, seq_len, splits)
    assert index.meta["tokenizer"] == "char" and index.meta["vocab"] == vocab
    tokenizer = CharTokenizer(vocab)
    for split in SPLITS:
        want = tokenizer.encode_array("".join(rows[split])).reshape(-1, seq_len)
        assert np.array_equal(token_ids(index, split), want), split


def words(seed: int, count: int) -> str:
    rng = np.random.default_rng(seed)
    pool = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "née", "ça",
            "Ünïcödé", "—", "日本", "42", "\n", "  ", ",", "."]
    return " ".join(rng.choice(pool, count))


def config(path: Path | str, **kw) -> DataConfig:
    return DataConfig(**{"source": "text", "path": str(path), **kw})


def test_directory_is_one_document_per_file(tmp_path: Path) -> None:
    for count in (3, 15):  # split by position, then by work
        folder = tmp_path / f"docs{count}"
        folder.mkdir()
        works = [words(i, 200 + 37 * i) for i in range(count)]
        for i, body in enumerate(works):
            (folder / f"{i:02d}.txt").write_text(body, encoding="utf-8")
        (folder / ".hidden").write_text("not a document")
        (folder / ".git").mkdir()
        (folder / ".git" / "HEAD").write_text("not a document either")
        index = corpus_index(config(folder, seq_len=16, shard_rows=5))
        assert_matches(index, works, 16)
        assert index.kind == "tokens" and index.meta["dtype"] == "uint8"


def test_cache_is_keyed_by_content(tmp_path: Path, cache: Path) -> None:
    path = tmp_path / "book.txt"
    path.write_text(words(0, 3000), encoding="utf-8")
    first = corpus_index(config(path, seq_len=32))
    built = (cache / "corpus").iterdir().__next__() / "index.json"
    stamp = built.stat().st_mtime_ns
    os.utime(path, ns=(1, 1))  # a new mtime, the same bytes: no rebuild
    assert corpus_index(config(path, seq_len=32)) == first
    assert built.stat().st_mtime_ns == stamp and len(list((cache / "corpus").iterdir())) == 1
    raw = bytearray(path.read_bytes())
    at = next(i for i in range(100, len(raw)) if chr(raw[i]).isascii() and chr(raw[i]).isalpha())
    raw[at] ^= 0x20  # one byte (a letter's case): a new corpus
    path.write_bytes(bytes(raw))
    second = corpus_index(config(path, seq_len=32))
    assert second.splits["train"][0].uri != first.splits["train"][0].uri
    assert len(list((cache / "corpus").iterdir())) == 2


def test_jsonl_lines_are_documents(tmp_path: Path) -> None:
    works = [words(i, 150) for i in range(4)]
    lines = [json.dumps({"text": w}) for w in works]
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(lines[:2] + [""] + lines[2:]) + "\n", encoding="utf-8")
    assert_matches(corpus_index(config(path, seq_len=16)), works, 16)
    given = [json.dumps({"text": w, "split": s})
             for w, s in zip(works, ["train", "test", "validation", "train"], strict=True)]
    path.write_text("\n".join(given), encoding="utf-8")
    assert_matches(corpus_index(config(path, seq_len=16)), works, 16,
                   ["train", "test", "validation", "train"])
    folder = tmp_path / "mixed"  # a directory of text and JSONL files
    folder.mkdir()
    (folder / "a.txt").write_text(works[0], encoding="utf-8")
    (folder / "b.jsonl").write_text("\n".join(lines[1:]), encoding="utf-8")
    assert_matches(corpus_index(config(folder, seq_len=16)), works, 16)
    path.write_text(lines[0] + "\n{not json\n", encoding="utf-8")
    with pytest.raises(DataError, match="docs.jsonl: line 2 is not JSON"):
        corpus_index(config(path, seq_len=16))


def test_parquet_rows_are_documents(tmp_path: Path) -> None:
    works = [words(i, 100 + i) for i in range(16)]
    splits = ["train", "validation", "test", "train"] * 4
    table = pa.table({"text": works, "split": splits, "work": [f"w{i}" for i in range(16)]})
    pq.write_table(table, tmp_path / "docs.parquet", row_group_size=5)
    index = corpus_index(DataConfig(source="parquet", path=str(tmp_path / "docs.parquet"),
                                    seq_len=24))
    assert_matches(index, works, 24, splits)
    pq.write_table(table.drop_columns(["split"]), tmp_path / "docs.parquet")  # by work
    index = corpus_index(DataConfig(source="parquet", path=str(tmp_path / "docs.parquet"),
                                    seq_len=24))
    assert_matches(index, works, 24)


def test_parquet_of_category_columns_and_numbered_works_is_read(tmp_path: Path) -> None:
    """A table pandas writes from category columns (strings dictionary-encoded, stored as
    they are) and an integer ``work`` column (a name, not used): the same rows as plain
    strings give; a column of other values for the text or the split is still refused."""
    works = [words(i, 100 + i) for i in range(16)]
    splits = ["train", "validation", "test", "train"] * 4
    table = pa.table({"body": pa.array(works).dictionary_encode(),
                      "split": pa.array(splits).dictionary_encode(),
                      "work": pa.array(range(16), pa.int64())})
    pq.write_table(table, tmp_path / "docs.parquet", row_group_size=5)
    assert pq.read_schema(tmp_path / "docs.parquet").field("split").type == pa.dictionary(
        pa.int32(), pa.string())
    index = corpus_index(DataConfig(source="parquet", path=str(tmp_path / "docs.parquet"),
                                    seq_len=24, text_field="body"))
    assert_matches(index, works, 24, splits)

    pq.write_table(table.set_column(0, "body", pa.array(range(16))), tmp_path / "ids.parquet")
    with pytest.raises(DataError, match=r"ids.parquet: column 'body' \(data.text_field=body\):"
                                        r" expected strings, got int64"):
        corpus_index(DataConfig(source="parquet", path=str(tmp_path / "ids.parquet"),
                                seq_len=24, text_field="body"))
    pq.write_table(table.drop_columns(["body"]).append_column(
        "story", pa.array(works).dictionary_encode()), tmp_path / "other.parquet")
    with pytest.raises(DataError, match=r"its string columns are \['story'\]: set "
                                        r"data.text_field to the column that holds the "
                                        r"documents, e.g. data.text_field=story"):
        corpus_index(DataConfig(source="parquet", path=str(tmp_path / "other.parquet"),
                                seq_len=24, text_field="body"))


def test_dtype_follows_the_vocabulary(tmp_path: Path) -> None:
    path = tmp_path / "wide.txt"
    body = "".join(chr(0x400 + i % 300) for i in range(20000))
    path.write_text(body, encoding="utf-8")
    index = corpus_index(config(path, seq_len=10, vocab_size=300))
    assert index.meta["dtype"] == "uint16" and index.meta["vocab_size"] == 300
    assert_matches(index, [body], 10)
    row = token_ids(index, "test")[0]
    assert load_tokenizer(index.meta).decode(row) == body[int(20000 * 0.95):][:10]


def test_shards_cover_every_row_once(tmp_path: Path) -> None:
    path = tmp_path / "book.txt"
    path.write_text(words(1, 4000), encoding="utf-8")
    index = corpus_index(config(path, seq_len=8, shard_rows=7))
    for split in SPLITS:
        shards, size = index.shards(split), 8 * index.num_rows(split)
        assert [s.first_row for s in shards] == list(range(0, index.num_rows(split), 7))
        assert all(s.rows == 7 for s in shards[:-1]) and 1 <= shards[-1].rows <= 7
        assert len({s.uri for s in shards}) == 1 and os.path.getsize(shards[0].uri) == size
        assert np.array_equal(token_ids(index, split).ravel(),
                              np.fromfile(shards[0].uri, dtype=np.uint8))


def test_concurrent_builds_share_one_cache(tmp_path: Path, cache: Path) -> None:
    path = tmp_path / "book.txt"
    path.write_text(words(2, 20000), encoding="utf-8")
    got: list[DataIndex] = []
    threads = [threading.Thread(target=lambda: got.append(corpus_index(config(path))))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 2 and got[0] == got[1]
    assert [p.name.startswith(".") for p in (cache / "corpus").iterdir()] == [False]


def test_bad_inputs_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file or directory"):
        corpus_index(config(tmp_path / "missing.txt"))
    (tmp_path / "blob.txt").write_bytes(b"ok" * 100 + b"\xff\xfe not text")
    with pytest.raises(DataError, match=r"not UTF-8 text \(line 1, byte 200\)"):
        corpus_index(config(tmp_path / "blob.txt", seq_len=4))
    (tmp_path / "tiny.txt").write_text("abcdefgh" * 3)
    with pytest.raises(DataError, match="too short for data.seq_len=4: the validation split"):
        corpus_index(config(tmp_path / "tiny.txt", seq_len=4))
    pq.write_table(pa.table({"text": ["abcd"] * 3, "split": ["train", "tset", "test"]}),
                   tmp_path / "bad.parquet")
    with pytest.raises(DataError, match="column 'split': row 1 is 'tset', expected one of"):
        corpus_index(DataConfig(source="parquet", path=str(tmp_path / "bad.parquet"),
                                seq_len=4))


# ---------------------------------------------------------------------------------------------
# BPE
# ---------------------------------------------------------------------------------------------

def test_bpe_trains_offline_and_round_trips(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    works = [words(i, 3000) for i in range(3)]
    for i, body in enumerate(works):
        (folder / f"{i}.txt").write_text(body, encoding="utf-8")
    cfg = config(folder, seq_len=16, tokenizer="bpe", vocab_size=300)
    index = corpus_index(cfg)
    tokenizer = load_tokenizer(index.meta)
    assert index.meta["tokenizer"] == "bpe" and 256 < tokenizer.vocab_size <= 300
    assert index.meta["dtype"] == "uint16" and index.meta["vocab_size"] == tokenizer.vocab_size
    sample = "Ünïcödé — 日本 ça, the lazy dog\n\n  42.🙂"
    assert tokenizer.decode(tokenizer.encode(sample)) == sample
    assert tokenizer.decode([tokenizer.vocab_size]) == "\ufffd"
    # rows: each part's tokens, whole rows only, however the files were read
    first = works[0][:int(len(works[0]) * 0.9)]
    ids = tokenizer.encode(first)
    assert np.array_equal(token_ids(index, "train")[:len(ids) // 16].ravel(),
                          ids[:len(ids) // 16 * 16])
    built = Path(index.meta["tokenizer_file"]).stat().st_mtime_ns
    assert corpus_index(cfg) == index  # cached: not retrained
    assert Path(index.meta["tokenizer_file"]).stat().st_mtime_ns == built
    monkeypatch.setattr(text_files, "READ_BYTES", 64)  # many small pieces, the same tokens
    monkeypatch.setenv("DBPARALLEL_CACHE", str(tmp_path / "other"))
    again = corpus_index(cfg)
    for split in SPLITS:
        assert np.array_equal(token_ids(again, split), token_ids(index, split))


def test_bpe_needs_every_byte(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text(words(0, 500))
    with pytest.raises(ConfigError, match="data.vocab_size: byte-level BPE needs 256"):
        corpus_index(config(tmp_path / "a.txt", tokenizer="bpe", vocab_size=128))


# ---------------------------------------------------------------------------------------------
# Memory: a corpus larger than a window is never held
# ---------------------------------------------------------------------------------------------

def test_tokenizing_does_not_hold_the_corpus(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    with open(path, "w", encoding="utf-8") as f:
        for i in range(8):
            f.write(words(i, 200_000) + "\n")
    size = path.stat().st_size
    assert size > 6_000_000
    tracemalloc.start()
    try:
        index = corpus_index(config(path, seq_len=64))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert index.num_rows("train") > 0.85 * size / 64 / 1.2
    assert peak < size / 5, (peak, size)  # about 1 MB: a few pieces of 64K characters


def test_object_store_corpus_is_the_local_one(tmp_path: Path, monkeypatch) -> None:
    server_mod = pytest.importorskip("moto.server", reason="moto[server] is in the test extra")
    import pyarrow.fs as pafs

    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
        s3 = pafs.S3FileSystem(endpoint_override=f"{host}:{port}", scheme="http",
                               region="us-east-1", allow_bucket_creation=True)
        s3.create_dir("texts")
        works = [words(i, 300) for i in range(3)]
        for i, body in enumerate(works):
            with s3.open_output_stream(f"texts/docs/{i}.txt") as f:
                f.write(body.encode())
        query = f"endpoint_override={host}:{port}&scheme=http&region=us-east-1"
        index = corpus_index(config(f"s3://texts/docs?{query}", seq_len=16))
        assert_matches(index, works, 16)
        assert index.source.startswith("s3://texts/docs")
    finally:
        server.stop()


def test_file_digests_are_remembered_while_size_and_time_stay(tmp_path) -> None:
    import os

    import pyarrow.fs as pafs

    from dbparallel.data.digests import blocks_digest, file_digest

    fs, path = pafs.LocalFileSystem(), tmp_path / "a.txt"
    path.write_text("to be or not to be")
    calls = []

    def digest() -> bytes:
        calls.append(1)
        return blocks_digest(iter([path.read_bytes()]))

    first = file_digest(fs, str(path), digest)
    assert file_digest(fs, str(path), digest) == first and len(calls) == 1  # remembered
    path.write_text("TO BE OR NOT TO BE")  # same size, new content and time
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    changed = file_digest(fs, str(path), digest)
    assert changed != first and len(calls) == 2


def test_a_relative_path_remembers_the_digest_of_its_own_file(tmp_path, monkeypatch) -> None:
    """Two files at the same relative data.path, seen from two working directories, with the
    same size and modification time (copied with their times, unpacked from archives) are
    two corpora, not one."""
    for name, body in (("a", "the cat sat on a mat. "), ("b", "a mat sat on the cat. ")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "book.txt").write_text(body * 40)
    stat = (tmp_path / "a" / "book.txt").stat()
    os.utime(tmp_path / "b" / "book.txt", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    data = DataConfig(source="text", path="book.txt", seq_len=16)
    texts = []
    for name in ("a", "b"):
        monkeypatch.chdir(tmp_path / name)
        index = corpus_index(data)
        ids = next(iter_split(index, "train", ["tokens"])).table["tokens"][0].as_py()
        texts.append(load_tokenizer(index.meta).decode(ids))
    assert texts == ["the cat sat on a", "a mat sat on the"]


# ---------------------------------------------------------------------------------------------
# Documents shorter than a row: data.pack, the dropped-tail warning
# ---------------------------------------------------------------------------------------------

def jsonl(path: Path, texts: list[str], splits: list[str] | None = None) -> Path:
    rows = [{"text": t} if splits is None else {"text": t, "split": s}
            for t, s in zip(texts, splits or texts, strict=True)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def lines(count: int, chars: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(list("abcdefgh ij"), chars)) for _ in range(count)]


def test_short_documents_are_refused_unless_packed(tmp_path: Path) -> None:
    docs = lines(60, 10)
    splits = ["validation" if i % 6 == 1 else "test" if i % 6 == 2 else "train"
              for i in range(60)]
    path = jsonl(tmp_path / "short.jsonl", docs, splits)
    with pytest.raises(DataError, match=r"the train split has no sequence \(400 characters in "
                                        r"40 documents\): each document is shorter than "
                                        r"a row of 16 characters.*data\.pack=true"):
        corpus_index(config(path, seq_len=16))
    index = corpus_index(config(path, seq_len=16, pack=True))
    tokenizer = load_tokenizer(index.meta)
    for split in SPLITS:  # the split's documents joined by "\n", cut across them
        joined = "\n".join(d for d, s in zip(docs, splits, strict=True) if s == split)
        want = [joined[k * 16:(k + 1) * 16] for k in range(len(joined) // 16)]
        assert [tokenizer.decode(r) for r in token_ids(index, split)] == want, split
    bpe = corpus_index(config(path, seq_len=8, pack=True, tokenizer="bpe", vocab_size=260))
    bpe_tokenizer = load_tokenizer(bpe.meta)
    joined = "\n".join(d for d, s in zip(docs, splits, strict=True) if s == "train")
    got = bpe_tokenizer.decode(token_ids(bpe, "train").ravel())
    assert len(got) > 300 and joined.startswith(got)


def test_long_documents_split_by_position_name_their_short_parts(tmp_path: Path) -> None:
    """Three documents of 200 characters: their validation parts (characters 90% to 95%) are
    10 characters each, shorter than a row; the documents themselves are not."""
    path = jsonl(tmp_path / "long.jsonl", lines(3, 200))
    with pytest.raises(DataError, match=r"the validation split has no sequence \(30 characters "
                                        r"in 3 documents\): with fewer than 14 documents each is "
                                        r"split by position, and each one's validation part "
                                        r"\(its characters 90% to 95%\) is shorter than a row "
                                        r"of 16 characters.*data\.pack=true"):
        corpus_index(config(path, seq_len=16))


def test_pack_names_its_own_corpus_and_leaves_the_others_alone(tmp_path: Path) -> None:
    import hashlib

    from dbparallel.data.corpus import VERSION, corpus_key

    data = config(tmp_path / "a.jsonl", seq_len=16)
    old = json.dumps({"content": "c", "seq_len": 16, "tokenizer": "char", "vocab_size": 128,
                      "version": VERSION}, sort_keys=True)
    assert corpus_key("c", data) == hashlib.sha256(old.encode()).hexdigest()[:24]
    assert corpus_key("c", config(tmp_path / "a.jsonl", seq_len=16, pack=True)) != \
        corpus_key("c", data)


def test_dropped_tails_are_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = jsonl(tmp_path / "mid.jsonl", lines(40, 24))  # 8 of every 24 characters dropped
    with caplog.at_level("WARNING", logger="dbparallel.data.corpus_layout"):
        corpus_index(config(path, seq_len=16))
    [record] = caplog.records
    assert "33% of the characters" in record.message and "data.pack=true" in record.message
    caplog.clear()
    with caplog.at_level("WARNING", logger="dbparallel.data.corpus_layout"):
        corpus_index(config(path, seq_len=16, pack=True))
        corpus_index(config(jsonl(tmp_path / "long.jsonl", lines(40, 100)), seq_len=16))
    assert not caplog.records  # packed; 4% dropped


# ---------------------------------------------------------------------------------------------
# Splits: validation and test may be absent; messages give the split's own size
# ---------------------------------------------------------------------------------------------

def test_missing_validation_and_test_splits_are_empty(tmp_path: Path) -> None:
    docs = lines(20, 40)
    path = jsonl(tmp_path / "tt.jsonl", docs, ["test" if i < 2 else "train" for i in range(20)])
    index = corpus_index(config(path, seq_len=16))
    assert (index.num_rows("train"), index.num_rows("validation"),
            index.num_rows("test")) == (36, 0, 4)
    assert index.present() == ["train", "test"] and index.eval_split == "test"
    only = corpus_index(config(jsonl(tmp_path / "train.jsonl", docs, ["train"] * 20),
                               seq_len=16))
    assert only.present() == ["train"] and only.eval_split == "train"
    small = jsonl(tmp_path / "small.jsonl", [*docs, "abcde"], [*["train"] * 20, "validation"])
    with pytest.raises(DataError, match=r"the validation split has no sequence "
                                        r"\(5 characters in 1 document\)"):
        corpus_index(config(small, seq_len=16))
    with pytest.raises(DataError, match="the train split has no text"):
        corpus_index(config(jsonl(tmp_path / "no_train.jsonl", docs, ["test"] * 20),
                            seq_len=16))


# ---------------------------------------------------------------------------------------------
# File formats: compression suffixes, .json is JSONL
# ---------------------------------------------------------------------------------------------

def test_format_is_named_by_the_suffix_under_the_compression(tmp_path: Path) -> None:
    import bz2
    import gzip

    works = [words(i, 150) for i in range(4)]
    body = "".join(json.dumps({"text": w}) + "\n" for w in works).encode()
    (tmp_path / "corpus.json").write_bytes(body)
    (tmp_path / "corpus.jsonl.gz").write_bytes(gzip.compress(body))
    (tmp_path / "corpus.ndjson.bz2").write_bytes(bz2.compress(body))
    (tmp_path / "book.txt.gz").write_bytes(gzip.compress(works[0].encode()))
    for name in ("corpus.json", "corpus.jsonl.gz", "corpus.ndjson.bz2"):
        assert_matches(corpus_index(config(tmp_path / name, seq_len=16)), works, 16)
    assert_matches(corpus_index(config(tmp_path / "book.txt.gz", seq_len=16)), works[:1], 16)
    (tmp_path / "pretty.json").write_text(json.dumps([{"text": w} for w in works], indent=1))
    with pytest.raises(DataError, match=r"pretty\.json: line 1 is not JSON.*one JSON object "
                                        r"per line"):
        corpus_index(config(tmp_path / "pretty.json", seq_len=16))
    (tmp_path / "t.parquet.gz").write_bytes(gzip.compress(b"PAR1"))
    with pytest.raises(DataError, match=r"t\.parquet\.gz' is a compressed Parquet file"):
        corpus_index(config(tmp_path / "t.parquet.gz", seq_len=16))


# ---------------------------------------------------------------------------------------------
# BPE: the ids the training split holds, for generation
# ---------------------------------------------------------------------------------------------

def test_bpe_keeps_the_ids_of_the_training_split(tmp_path: Path) -> None:
    from dbparallel.data.tokenizer import TRAIN_IDS_FILE, TRAIN_IDS_KEY, tokenizer_from_description

    path = tmp_path / "ascii.txt"
    path.write_text(" ".join(["to be or not to be that is the question"] * 200))
    index = corpus_index(config(path, seq_len=16, tokenizer="bpe", vocab_size=300))
    tokenizer = load_tokenizer(index.meta)
    train = np.unique(token_ids(index, "train"))
    assert tokenizer.usable.tolist() == train.tolist() and len(train) < 60
    again = tokenizer_from_description(json.loads(json.dumps(tokenizer.describe())))
    assert again.usable.tolist() == train.tolist()  # vocab.json and exports keep them
    old = {k: v for k, v in tokenizer.describe().items() if k != TRAIN_IDS_KEY}
    assert tokenizer_from_description(old).usable == tokenizer.vocab_size  # as before
    kept = Path(index.meta["tokenizer_file"]).with_name(TRAIN_IDS_FILE)
    kept.unlink()  # a corpus built before the ids were kept: read once from train.bin
    assert load_tokenizer(index.meta).usable == tokenizer.vocab_size
    assert load_tokenizer(corpus_index(config(path, seq_len=16, tokenizer="bpe",
                                              vocab_size=300)).meta).usable.tolist() == \
        train.tolist()
    assert kept.is_file()


def test_a_byte_order_mark_opening_a_file_is_warned_of_once(tmp_path: Path, caplog) -> None:
    folder = tmp_path / "bom"
    folder.mkdir()
    (folder / "a.txt").write_text("\ufeff" + words(1, 300), encoding="utf-8")
    (folder / "b.txt").write_text(words(2, 300) + "\ufeff", encoding="utf-8")  # not opening
    (folder / "c.txt").write_text(words(3, 300), encoding="utf-8")
    with caplog.at_level("WARNING"):
        corpus_index(config(folder, seq_len=16, shard_rows=5))
    said = [r.getMessage() for r in caplog.records if "byte order mark" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith(f"{folder / 'a.txt'} opens with")
