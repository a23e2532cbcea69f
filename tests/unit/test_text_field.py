"""data.text_field: the JSONL field or Parquet column a text corpus's documents are read from,
in the corpus's cache key, in what a run is (a resume with another is refused), in the errors
of data without it, and in what eval/sample --data read for a trained text network."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dbparallel import cli
from dbparallel.config import ConfigError, DataConfig, load_config
from dbparallel.data.corpus import corpus_index, corpus_key
from dbparallel.data.shards import DataIndex
from dbparallel.data.split_reader import iter_split
from dbparallel.data.tokenizer import load_tokenizer
from dbparallel.errors import DataError, RunDirError

ROOT = Path(__file__).resolve().parents[2]
STORY = "Once upon a time a fox met a crow; the crow held a piece of cheese. "
NOTE = "ZYX WVU TSR QPO. "  # other characters: read in place of STORY, another vocabulary


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DBPARALLEL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def stories(count: int = 4) -> list[str]:
    return [f"{i}: {STORY * 6}" for i in range(count)]


def text_of(index: DataIndex) -> dict[str, str]:
    """Every split's rows decoded, in order."""
    tokenizer = load_tokenizer(index.meta)
    out = {}
    for split in index.present():
        ids = np.concatenate([np.asarray(r.table["tokens"].combine_chunks().flatten())
                              for r in iter_split(index, split)])
        out[split] = tokenizer.decode(ids)
    return out


def data(path: Path, source: str = "text", **kw) -> DataConfig:
    return DataConfig(source=source, path=str(path), seq_len=16, **kw)


def test_jsonl_and_parquet_are_read_from_the_field_the_key_names(tmp_path: Path) -> None:
    """The documents of a field or column other than `text` train as the same documents
    under `text` do: in a JSONL file, a Parquet file (either source) and a folder of both."""
    docs = stories()
    reference = text_of(corpus_index(data(write_jsonl(tmp_path / "ref.jsonl",
                                                      [{"text": d} for d in docs]))))
    assert reference["train"].startswith("0: Once upon")
    story = write_jsonl(tmp_path / "s.jsonl", [{"id": i, "story": d} for i, d in enumerate(docs)])
    table = tmp_path / "s.parquet"
    pq.write_table(pa.table({"story": docs, "n": list(range(len(docs)))}), table)
    for path, source in ((story, "text"), (table, "text"), (table, "parquet")):
        assert text_of(corpus_index(data(path, source, text_field="story"))) == reference, path
    folder = tmp_path / "both"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", [{"story": d} for d in docs[:2]])
    pq.write_table(pa.table({"story": docs[2:]}), folder / "b.parquet")
    assert text_of(corpus_index(data(folder, text_field="story"))) == reference


def test_another_field_of_the_same_file_is_another_corpus(tmp_path: Path) -> None:
    """The key is part of the cache key: the second field's corpus is built, not the first's
    taken from the cache; a corpus of text files alone, which has no field, keeps its key."""
    both = write_jsonl(tmp_path / "both.jsonl",
                       [{"text": d, "note": NOTE * 8} for d in stories(20)])
    by_text = corpus_index(data(both))
    by_note = corpus_index(data(both, text_field="note"))
    assert by_text.meta["content"] != by_note.meta["content"]  # the cache folder
    assert text_of(by_note)["train"].startswith(NOTE) and "fox" not in text_of(by_note)["train"]
    assert "fox" in text_of(by_text)["train"]
    base = data(both)
    assert corpus_key("c", data(both, text_field="note")) != corpus_key("c", base)
    assert corpus_key("c", data(both, text_field="note"), reads_field=False) == \
        corpus_key("c", base)
    plain = tmp_path / "plain.txt"
    plain.write_text(STORY * 20)
    assert corpus_index(data(plain, text_field="note")).meta["content"] == \
        corpus_index(data(plain)).meta["content"]


def test_the_key_is_checked_and_image_tasks_leave_it_alone(tmp_path: Path) -> None:
    for bad in ("", "split", "work"):
        with pytest.raises(ConfigError, match=r"^data\.text_field: must name the field"):
            DataConfig(text_field=bad)
    with pytest.raises(ConfigError, match=r"data\.text_field: must name the field .* got 'work'"):
        load_config([], ["task=ar", "data.source=shakespeare", "data.text_field=work"])
    # an image task reads no text, as it ignores data.tokenizer: its own table trains as
    # it would without the key (no column of that name)
    table = tmp_path / "digits.parquet"
    rng = np.random.default_rng(0)
    pq.write_table(pa.table({"image": list(rng.random((20, 64)).astype(np.float32)),
                             "label": rng.integers(0, 10, 20)}), table)
    for argv in ([], ["data.text_field=story"]):
        assert cli.main(["data", "check", str(table), *argv]) == 0
    pq.write_table(pa.table({"story": stories()}), table)  # a table of that column is text
    assert cli.main(["data", "check", str(table), "data.text_field=story"]) == 2


def test_data_without_the_field_is_told_the_key(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    docs = stories()
    lines = write_jsonl(tmp_path / "lines.jsonl",
                        [{"content": d} for d in docs[:2]] + [{"id": 3, "body": docs[2]}])
    with pytest.raises(DataError) as err:
        corpus_index(data(lines, text_field="content"))
    assert str(err.value) == (
        f"{lines}: line 3 has no \"content\" field (data.text_field=content); it has \"id\", "
        f"\"body\": the lines before it have \"content\": give every line its document in it, "
        f"e.g. jq -c 'if has(\"content\") then . else .[\"content\"] = .[\"body\"] | "
        f"del(.[\"body\"]) end' FILE > FILE.jsonl")
    folder = tmp_path / "lines"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", [{"content": d} for d in docs])
    write_jsonl(folder / "b.jsonl", [{"body": docs[0]}])
    with pytest.raises(DataError) as err:  # the file before it has the field: rename it here
        corpus_index(data(folder, text_field="content"))
    assert str(err.value) == (
        f"{folder / 'b.jsonl'}: line 1 has no \"content\" field (data.text_field=content); it "
        f"has \"body\": the files of '{folder}' before it have \"content\": rename the field "
        f"in this file, e.g. jq -c '.[\"content\"] = .[\"body\"] | del(.[\"body\"])' FILE > "
        f"FILE.jsonl; or move the file out of '{folder}' if it holds no documents")
    write_jsonl(lines, [{"content": 7}])
    with pytest.raises(DataError, match=r'line 1: field "content" is a number, expected a '
                                        r'string \(JSON Lines .* in its string field '
                                        r'"content" \(data.text_field=content\)\)$'):
        corpus_index(data(lines, text_field="content"))
    table = tmp_path / "t.parquet"
    pq.write_table(pa.table({"title": ["a"] * 4, "body": docs, "n": [1, 2, 3, 4]}), table)
    argv = ["data", "check", str(table), "task=ar", "data.text_field=content"]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err == (
        f"dbparallel: error: {table}: column 'content' is missing (data.text_field=content); "
        f"its string columns are ['title', 'body']: set data.text_field to the column that "
        f"holds the documents, e.g. data.text_field=title\n")
    pq.write_table(pa.table({"content": [1, 2]}), table)
    assert cli.main(argv) == 2
    assert (f"{table}: column 'content' (data.text_field=content): expected strings, got "
            f"int64") in capsys.readouterr().err


def test_data_check_reads_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = write_jsonl(tmp_path / "c.jsonl", [{"content": d} for d in stories(20)])
    assert cli.main(["data", "check", str(lines), "task=ar"]) == 2
    assert 'line 1 has no "text" field' in capsys.readouterr().err
    assert cli.main(["data", "check", str(lines), "task=ar", "data.text_field=content",
                     "data.seq_len=32", "sample.prompt_len=8", "sample.gen_len=8"]) == 0
    assert "train: " in capsys.readouterr().out


def test_a_run_of_a_field_resumes_with_it_alone_and_eval_data_reads_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One tiny run trained on field `content` of a file that also holds `text`: a resume
    with the other field is refused by the config (and the pinned data would refuse it too:
    another corpus), and eval/sample --data read the run's field."""
    from dbparallel.runtime.local import run_local
    from dbparallel.training.data_pin import refuse_other_data
    from dbparallel.training.storage import Storage

    corpus = write_jsonl(tmp_path / "both.jsonl",
                         [{"text": NOTE * 12, "content": d} for d in stories(20)])
    run = tmp_path / "run"
    common = ["task=ar", "model.depth=2", "model.hidden=32", "data.source=text",
              f"data.path={corpus}", "data.seq_len=32", "sample.prompt_len=8",
              "sample.gen_len=8", "sample.scorer_steps=20", "train.steps=3",
              "train.checkpoint_every=3", "train.log_every=1", "metrics.port=0",
              "sample.eval_samples=10", f"run.dir={run}"]
    cfg = load_config([ROOT / "jobs" / "tiny_cpu.yaml"], [*common, "data.text_field=content"])
    run_local(cfg, None, progress=False, only_blocks=list(range(cfg.model.blocks)))
    other = load_config([ROOT / "jobs" / "tiny_cpu.yaml"], common)  # field `text`
    assert cli.main(["train", "--local", str(ROOT / "jobs" / "tiny_cpu.yaml"), *common]) == 2
    assert ("holds blocks trained with other values of data.text_field (data.text_field: "
            "'content' there, 'text' now)") in capsys.readouterr().err
    with pytest.raises(RunDirError, match="trained on other data"):
        refuse_other_data(Storage(str(run)), corpus_index(other.data))

    moved = tmp_path / "moved" / "both.jsonl"
    moved.parent.mkdir()
    shutil.copy(corpus, moved)
    assert cli.main(["eval", str(run), "--json"]) == 0
    before = json.loads(capsys.readouterr().out)
    assert cli.main(["eval", str(run), "--data", str(moved), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == before  # `content` read, not `text`
    out = tmp_path / "samples.txt"
    assert cli.main(["sample", str(run), "--out", str(out), "--data", str(moved)]) == 0
    assert out.read_text()
    write_jsonl(moved, [{"text": d} for d in stories(20)])
    assert cli.main(["eval", str(run), "--data", str(moved)]) == 2
    assert capsys.readouterr().err == (
        f"dbparallel: error: --data {moved}: {moved}: line 1 has no \"content\" field: this "
        f"run is a text run (task=ar), and --data takes text: a text, JSONL or Parquet file, "
        f"or a folder of them, the documents of JSONL and Parquet in field 'content' (the "
        f"run's data.text_field)\n")


def test_eval_data_of_a_text_run_read_from_parquet_says_it_takes_parquet(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A text run of data.source=parquet reads --data as Parquet: a JSONL file of the same
    documents is refused saying that --data takes Parquet (not 'text'), and the table moved
    elsewhere is read."""
    from dbparallel.runtime.local import run_local

    table = tmp_path / "stories.parquet"
    pq.write_table(pa.table({"story": stories(20)}), table)
    run = tmp_path / "run"
    common = ["task=mdm", "model.depth=2", "model.hidden=32", "data.source=parquet",
              f"data.path={table}", "data.text_field=story", "data.seq_len=32",
              "train.steps=2", "train.checkpoint_every=2", "train.log_every=1",
              "metrics.port=0", "sample.eval_samples=10", "sample.elbo_draws=1",
              "sample.steps=4", f"run.dir={run}"]
    cfg = load_config([ROOT / "jobs" / "tiny_cpu.yaml"], common)
    run_local(cfg, None, progress=False, only_blocks=list(range(cfg.model.blocks)))

    lines = write_jsonl(tmp_path / "stories.jsonl", [{"story": d} for d in stories(20)])
    assert cli.main(["eval", str(run), "--data", str(lines)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"dbparallel: error: --data {lines}: {str(lines)!r} is named as text, not Parquet: "
        f"this run is a text run (task=mdm) read from Parquet (data.source=parquet), and "
        f"--data takes Parquet: a Parquet file with a string column 'story' (the run's "
        f"data.text_field), or a folder of them\n")
    moved = tmp_path / "moved" / "stories.parquet"
    moved.parent.mkdir()
    shutil.copy(table, moved)
    assert cli.main(["eval", str(run), "--data", str(moved), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bpc"] > 0
