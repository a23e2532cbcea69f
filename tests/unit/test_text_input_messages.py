"""What a user's own text corpus is told when it cannot be read: the file, the line and the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dbparallel.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DBPARALLEL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def error_of(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The one-line error of a command that exits 2."""
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("dbparallel: error: "), err
    return err


def test_a_text_task_names_a_parquet_table_without_a_text_column(tmp_path, capsys) -> None:
    path = tmp_path / "notes_content.parquet"
    pq.write_table(pa.table({"content": ["To be, or not to be. " * 20] * 4}), path)
    key = ("(data.text_field=text); its string columns are ['content']: set data.text_field "
           "to the column that holds the documents")
    for argv in (["data", "check", "task=mdm", "data.source=parquet", f"data.path={path}"],
                 ["data", "check", str(path), "task=ar"],
                 ["train", "--local", str(ROOT / "jobs" / "ar_shakespeare_tiny.yaml"),
                  "data.source=parquet", f"data.path={path}", f"run.dir={tmp_path / 'run'}"]):
        err = error_of(capsys, *argv)
        assert f"{path}: column 'text' is missing {key}, e.g. data.text_field=content" in err, \
            argv
        assert "'image'" not in err and "rename" not in err
    assert not (tmp_path / "run").exists()
    folder = tmp_path / "tables"  # a later file of a folder: named as it is read
    folder.mkdir()
    pq.write_table(pa.table({"text": ["To be, or not to be. " * 20] * 4}), folder / "a.parquet")
    pq.write_table(pa.table({"content": ["x"]}), folder / "b.parquet")
    err = error_of(capsys, "data", "check", str(folder), "task=ar")
    assert err == (f"dbparallel: error: {folder / 'b.parquet'}: column 'text' is missing "
                   f"(data.text_field=text); its string columns are ['content']: the files of "
                   f"'{folder}' before it have 'text': rename the column that holds the "
                   f"documents in this file\n")
    (folder / "a.parquet").unlink()  # the first file: the key, for every file of the folder
    err = error_of(capsys, "data", "check", str(folder), "task=ar")
    assert (f"{folder / 'b.parquet'}: column 'text' is missing {key} of every JSONL and "
            f"Parquet file of '{folder}', e.g. data.text_field=content\n") in err
    pq.write_table(pa.table({"n": [1, 2]}), folder / "b.parquet")
    err = error_of(capsys, "data", "check", str(folder), "task=ar")
    assert (f"{folder / 'b.parquet'}: column 'text' is missing (data.text_field=text), and the "
            f"table has no string column to read documents from (it has ['n'])") in err


def test_a_text_task_reads_a_folder_of_text_with_a_stray_image_as_text(tmp_path,
                                                                        capsys) -> None:
    folder = tmp_path / "folder_binary"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.txt").write_text(f"document {i}, some text here\n" * 40)
    stray = folder / "image.png"
    stray.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(32))
    for argv in ([str(folder), "task=ar"],
                 [str(ROOT / "jobs" / "ar_shakespeare_tiny.yaml"), str(folder)]):  # its task
        err = error_of(capsys, "data", "check", *argv)
        assert f"data.path: '{stray}' is an image, not text" in err, argv
        assert f"move it out of '{folder}'" in err
    err = error_of(capsys, "data", "check", "task=ar", "data.source=text",
                   f"data.path={stray}")
    assert f"data.path: '{stray}' is an image, not text" in err
    assert "move it out" not in err  # a file given alone
    stray.rename(folder / "scan.TIF")  # an image format image folders do not read
    err = error_of(capsys, "data", "check", str(folder), "task=ar")
    assert f"data.path: '{folder / 'scan.TIF'}' is an image, not text" in err
    (folder / "scan.TIF").unlink()
    assert main(["data", "check", str(folder), "task=ar", "data.seq_len=32",
                 "sample.prompt_len=8", "sample.gen_len=8"]) == 0
    assert "train: " in capsys.readouterr().out


def test_a_bare_path_is_guessed_by_the_task_and_by_its_name() -> None:
    from dbparallel.cli_data import _bare_source, _text_task

    assert _text_task(["task=ar"]) and _text_task([str(ROOT / "jobs" / "mdm_shakespeare.yaml")])
    assert not _text_task([str(ROOT / "jobs" / "mdm_shakespeare.yaml"), "task=vit"])
    assert not _text_task(["data.path=/d"])  # the default task, dit
    assert _bare_source("s3://bucket/corpus.jsonl.gz?endpoint_override=h:9000") == "text"
    assert _bare_source("s3://bucket/data/") == _bare_source("gs://b/t.parquet") == "parquet"


def test_an_image_task_still_reads_a_folder_of_images(tmp_path) -> None:
    from dbparallel.cli_data import _bare_source

    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "1.png").write_bytes(b"\x89PNG")
    (tmp_path / "notes.txt").write_text("about the cats")
    assert _bare_source(str(tmp_path)) == "image_folder"
    assert _bare_source(str(tmp_path), text_task=True) == "text"
    (tmp_path / "t.parquet").write_bytes(b"PAR1")
    assert _bare_source(str(tmp_path), text_task=True) == "parquet"


def test_an_image_task_given_a_folder_read_as_text_is_told_what_it_holds(tmp_path,
                                                                         capsys) -> None:
    folder = tmp_path / "scans"  # class folders of TIFF images, which an image folder skips
    for c in ("a", "b"):
        (folder / c).mkdir(parents=True)
        for i in range(2):
            (folder / c / f"{i}.tif").write_bytes(b"II*\x00" + bytes(32))
    (folder / "README.txt").write_text("scans of two kinds")
    err = error_of(capsys, "data", "check", str(folder))
    assert err.strip().splitlines() == [
        f"dbparallel: error: data.path: '{folder}' holds no image (.png .jpg .jpeg .bmp .gif "
        f".webp) or Parquet file, so it reads as text (.tif (4), .txt (1)), and task=dit "
        f"trains on images: convert the images to one of those formats, or set task=mdm, ar "
        f"or looped to train a language model on the text"]
    err = error_of(capsys, "data", "check", str(folder), "data.source=image_folder")
    assert "no class folders with image files" in err  # a source given is not guessed


def corpus_error(path: Path) -> str:
    from dbparallel.config import DataConfig
    from dbparallel.data.corpus import corpus_index
    from dbparallel.errors import DataError

    with pytest.raises(DataError) as err:
        corpus_index(DataConfig(source="text", path=str(path), seq_len=16))
    return str(err.value)


def test_a_json_document_spanning_lines_is_told_what_json_lines_are(tmp_path) -> None:
    import json

    docs = [{"text": "To be, or not to be. " * 4}] * 3
    (tmp_path / "pretty.json").write_text(json.dumps(docs, indent=2))
    err = corpus_error(tmp_path / "pretty.json")
    assert err.startswith(f"{tmp_path / 'pretty.json'}: line 1 is not JSON (Expecting value")
    assert "looks like one JSON document spanning lines (it starts with '[')" in err
    assert ('one JSON object per line with a string field "text" (data.text_field=text), '
            'like {"text": "..."}') in err
    assert "jq -c '.[]'" in err
    (tmp_path / "one.json").write_text("\n" + json.dumps({"rows": docs}, indent=2))
    assert "spanning lines (it starts with '{')" in corpus_error(tmp_path / "one.json")
    marked = json.dumps(docs, indent=2).encode("utf-8-sig")  # as Windows Notepad saves it
    (tmp_path / "notepad.json").write_bytes(marked.replace(b"\n", b"\r\n"))
    assert "spanning lines (it starts with '[')" in corpus_error(tmp_path / "notepad.json")
    (tmp_path / "broken.jsonl").write_text(json.dumps(docs[0]) + "\n{oops\n")
    err = corpus_error(tmp_path / "broken.jsonl")  # a bad line further on is only not JSON
    assert "broken.jsonl: line 2 is not JSON: " in err and "spanning lines" not in err
    # lines cut short further on are all named at once, the rule said once
    good = json.dumps(docs[0])
    (tmp_path / "cut.jsonl").write_text("\n".join([good, good[:20], good, "{oops", good]))
    err = corpus_error(tmp_path / "cut.jsonl").splitlines()
    assert err[0] == ('2 bad lines; JSON Lines (.jsonl, .ndjson, .json) hold one JSON object '
                      'per line, the document in its string field "text" '
                      '(data.text_field=text):')
    assert [line.split(" is not JSON: ")[0].strip() for line in err[1:]] == \
        [f"{tmp_path / 'cut.jsonl'}: line {n}" for n in (2, 4)]
    (tmp_path / "many.jsonl").write_text("\n".join([good] + ["{"] * 25))
    err = corpus_error(tmp_path / "many.jsonl").splitlines()
    assert err[0].startswith("the first 20 bad lines (it stops at 20; more may follow); JSON")
    assert len(err) == 21 and err[-1].strip().startswith(f"{tmp_path / 'many.jsonl'}: line 21 ")
    # a line that holds no document stops the reading: the broken lines before it are named too
    (tmp_path / "stops.jsonl").write_text("\n".join([good, "{oops", good, "[1, 2]", "{oops"]))
    err = corpus_error(tmp_path / "stops.jsonl").splitlines()
    assert err[0].startswith("2 bad lines; JSON")  # the second says why it stops there
    assert err[1].strip().startswith(f"{tmp_path / 'stops.jsonl'}: line 2 is not JSON: ")
    assert err[2].strip().startswith(f"{tmp_path / 'stops.jsonl'}: line 4 is ")
    assert len(err) == 3, err


def test_a_json_line_without_a_text_string_says_what_it_has(tmp_path) -> None:
    import json

    rule = ("JSON Lines (.jsonl, .ndjson, .json) hold one JSON object per line, the document "
            "in its string field \"text\" (data.text_field=text)")
    (tmp_path / "content.jsonl").write_text(json.dumps({"id": 3, "content": "a"}) + "\n")
    err = corpus_error(tmp_path / "content.jsonl")
    assert err == (f"{tmp_path / 'content.jsonl'}: line 1 has no \"text\" field "
                   f"(data.text_field=text); it has \"id\", \"content\": set "
                   f"data.text_field=content if that field holds the documents")
    (tmp_path / "number.jsonl").write_text('{"text": "a"}\n{"text": 5}\n')
    assert corpus_error(tmp_path / "number.jsonl") == (
        f"{tmp_path / 'number.jsonl'}: line 2: field \"text\" is a number, expected a string "
        f"({rule})")  # a file given alone is not told to move out of a folder
    (tmp_path / "array.jsonl").write_text(json.dumps([{"text": "a"}]) + "\n")
    assert corpus_error(tmp_path / "array.jsonl") == (
        f"{tmp_path / 'array.jsonl'}: line 1 is a JSON array, expected an object ({rule}; "
        f"the file looks like one JSON array; convert it with `jq -c '.[]' FILE > "
        f"FILE.jsonl`)")
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text("To be, or not to be. " * 40)
    (folder / "meta.json").write_text(json.dumps({"author": "W. S."}) + "\n")
    assert corpus_error(folder).endswith(
        f"it has \"author\": set data.text_field=author if that field holds the documents of "
        f"every JSONL and Parquet file of '{folder}'; or move the file out of '{folder}' if "
        f"it holds no documents")


def test_a_corpus_without_text_names_its_files_and_gives_split_advice_only_for_splits(
        tmp_path) -> None:
    import json

    (tmp_path / "empty.txt").write_text("")
    err = corpus_error(tmp_path / "empty.txt")
    assert err == f"data.path: '{tmp_path / 'empty.txt'}' holds no text (1 document of 0 " \
                  f"characters)"
    folder = tmp_path / "empties"
    folder.mkdir()
    for i in range(7):
        (folder / f"{i}.txt").write_text("")
    err = corpus_error(folder)
    assert f"data.path: '{folder}' holds no text (7 documents of 0 characters) in its 7 " \
           f"files: '{folder / '0.txt'}', " in err and f"'{folder / '4.txt'}' and 2 more" in err
    (tmp_path / "blank.jsonl").write_text("\n\n")
    assert "holds no text (no documents)" in corpus_error(tmp_path / "blank.jsonl")
    (tmp_path / "a.txt").write_text("a")  # its one character falls in the test split
    err = corpus_error(tmp_path / "a.txt")
    assert f"data.path: '{tmp_path / 'a.txt'}': the train split has no text (1 document, " \
           f"1 character in all): split by position" in err and "split 'train'" not in err
    tested = [json.dumps({"text": "To be, or not to be.", "split": "test"})] * 3
    (tmp_path / "tested.jsonl").write_text("\n".join(tested))
    assert "give documents split 'train', or leave their split out" in \
        corpus_error(tmp_path / "tested.jsonl")


@pytest.mark.parametrize("read_bytes", [4, 1 << 16])  # lines counted across blocks too
def test_text_that_is_not_utf8_is_named_by_line_and_byte(tmp_path, monkeypatch,
                                                         read_bytes: int) -> None:
    from dbparallel.data import text_files

    monkeypatch.setattr(text_files, "READ_BYTES", read_bytes)
    path = tmp_path / "latin1.txt"
    path.write_bytes("line one\nline two, née\ncafé au lait\n".encode("latin1"))
    assert "latin1.txt' is not UTF-8 text (line 2, byte 20): save it as UTF-8" in \
        corpus_error(path)
    path.write_bytes("liné one\nline two\n\ncafé".encode() + b"\xe9 au lait\n")
    assert "(line 4, byte 25)" in corpus_error(path)
    path.write_bytes(b"ab\nc" + "é".encode()[:1])  # cut inside its last character
    assert "(line 2, byte 4)" in corpus_error(path)


@pytest.mark.parametrize("read_bytes", [4, 1 << 16])
def test_utf16_and_utf32_text_is_refused_not_trained_with_nul_characters(
        tmp_path, monkeypatch, capsys, read_bytes: int) -> None:
    """ASCII text in UTF-16 or UTF-32 without a byte order mark is valid UTF-8, a NUL beside
    every character; with one, it is named as such."""
    from dbparallel.data import text_files

    monkeypatch.setattr(text_files, "READ_BYTES", read_bytes)
    body = "To be, or not to be.\nThat is the question.\n" * 20
    nul = "holds a NUL character ({}), which no text has: UTF-16 or UTF-32 text, or a " \
          "binary file; save it as UTF-8 (iconv -f ITS_ENCODING -t UTF-8)"
    for encoding, where in (("utf-16-le", "line 1, byte 1"), ("utf-16-be", "line 1, byte 0"),
                            ("utf-32-le", "line 1, byte 1")):
        path = tmp_path / f"{encoding}.txt"
        path.write_bytes(body.encode(encoding))
        assert corpus_error(path) == f"data.path: '{path}' {nul.format(where)}"
    path = tmp_path / "late.txt"
    path.write_bytes("né\nab\nc".encode() + b"\x00")  # after a 2-byte character
    assert corpus_error(path) == f"data.path: '{path}' {nul.format('line 3, byte 8')}"
    marked = "(it opens with a UTF-16 or UTF-32 byte order mark; e.g. iconv -f UTF-16 -t UTF-8)"
    for encoding, at in (("utf-16-le", 0), ("utf-16-be", 0), ("utf-32-le", 0),
                         ("utf-32-be", 2)):  # (UTF-32BE's mark opens with two NULs)
        path = tmp_path / f"bom-{encoding}.txt"
        path.write_bytes(("\ufeff" + body).encode(encoding))  # with its byte order mark
        assert corpus_error(path).endswith(
            f"is not UTF-8 text (line 1, byte {at}): save it as UTF-8 {marked}"), encoding
    err = error_of(capsys, "data", "check", str(tmp_path / "utf-16-le.txt"), "task=ar")
    assert "holds a NUL character (line 1, byte 1)" in err


def test_a_file_of_a_folder_that_is_not_utf8_is_told_it_may_move_out(tmp_path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text("To be, or not to be. " * 40)
    (folder / "paper.pdf").write_bytes(b"%PDF-1.4\n\xe2\x28\xa1 binary")
    assert corpus_error(folder) == (
        f"data.path: '{folder / 'paper.pdf'}' is not UTF-8 text (line 2, byte 9): save it as "
        f"UTF-8, or move it out of '{folder}' if it is no text (every file of a folder but "
        f"JSONL and Parquet files is read as one text document)")
    assert corpus_error(folder / "paper.pdf").endswith("(line 2, byte 9): save it as UTF-8")


def test_a_folder_of_hidden_files_alone_says_they_are_skipped(tmp_path) -> None:
    folder = tmp_path / "notes"
    (folder / ".drafts").mkdir(parents=True)
    (folder / ".a.txt").write_text("To be, or not to be. " * 40)
    (folder / ".drafts" / "b.txt").write_text("To be, or not to be. " * 40)
    assert corpus_error(folder) == (
        f"data.path: no files in '{folder}' but 2 hidden ones (a name, or a folder's, starting "
        f"with '.'), which are skipped")
    (folder / ".a.txt").unlink()
    (folder / ".drafts" / "b.txt").unlink()
    assert corpus_error(folder) == f"data.path: no files in '{folder}'"


def test_a_compression_not_read_here_is_named_not_read_as_text(tmp_path, capsys) -> None:
    import lzma

    path = tmp_path / "book.txt.xz"
    path.write_bytes(lzma.compress(("To be, or not to be. " * 40).encode()))
    refused = (f"data.path: '{path}' is compressed as .xz, which is not read here (only .gz, "
               f".bz2, .lz4, .zst, decompressed as they are read): decompress it (xz -d FILE), "
               f"or compress it as one of those")
    assert corpus_error(path) == refused
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text("To be, or not to be. " * 40)
    (folder / "b.jsonl.xz").write_bytes(path.read_bytes())
    assert "b.jsonl.xz' is compressed as .xz, which is not read here" in corpus_error(folder)
    assert error_of(capsys, "data", "check", str(path), "task=ar") == \
        f"dbparallel: error: {refused}\n"  # named as text, not read as Parquet


def test_an_archive_of_files_is_refused_before_it_is_read_as_text(tmp_path, capsys) -> None:
    import tarfile
    import zipfile

    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "a.txt").write_text("To be, or not to be. " * 40)
    with tarfile.open(tmp_path / "corpus.tar.gz", "w:gz") as tar:  # once read as text
        tar.add(folder / "a.txt", arcname="a.txt")
    with zipfile.ZipFile(tmp_path / "corpus.zip", "w") as z:
        z.write(folder / "a.txt", arcname="a.txt")
    extract = "is an archive of files, not a text document: extract it (tar xf, unzip) and " \
              "set data.path to the folder it gives"
    for name in ("corpus.tar.gz", "corpus.zip"):
        assert corpus_error(tmp_path / name) == f"data.path: '{tmp_path / name}' {extract}"
    err = error_of(capsys, "data", "check", str(tmp_path / "corpus.tar.gz"), "task=ar")
    assert f"'{tmp_path / 'corpus.tar.gz'}' {extract}" in err  # given alone, for a text task
    (tmp_path / "corpus.zip").rename(folder / "old.zip")
    assert corpus_error(folder) == (f"data.path: '{folder / 'old.zip'}' {extract}; or move it "
                                    f"out of '{folder}'")


def test_a_parquet_folder_names_the_text_files_it_does_not_read(tmp_path, capsys,
                                                                caplog) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    pq.write_table(pa.table({"text": ["To be, or not to be. " * 20] * 30}),
                   folder / "extra.parquet")
    for i in range(3):
        (folder / f"w{i}.txt").write_text("the quick brown fox " * 100)
    (folder / ".notes.txt").write_text("hidden")
    assert main(["data", "check", str(folder), "task=ar"]) == 0
    told = [r.getMessage() for r in caplog.records if "does not read" in r.getMessage()]
    assert told == [f"data.path: {str(folder)!r} holds text files ("
                    f"{str(folder / 'w0.txt')!r} and 2 more) that data.source=parquet does "
                    f"not read: only its Parquet files' 'text' column is trained on; "
                    f"data.source=text reads the text, JSONL and Parquet files together"]
    caplog.clear()
    assert main(["data", "check", str(folder), "task=ar", "data.source=text"]) == 0
    assert not [r for r in caplog.records if "does not read" in r.getMessage()]
    assert "train: " in capsys.readouterr().out


def test_text_files_in_a_hidden_folder_beside_parquet_files_are_not_named(tmp_path,
                                                                         caplog) -> None:
    """data.source=text skips a hidden folder's files too: they are no text it would read."""
    folder = tmp_path / "tables"
    (folder / ".ipynb_checkpoints").mkdir(parents=True)
    pq.write_table(pa.table({"text": ["To be, or not to be. " * 20] * 30}),
                   folder / "part.parquet")
    (folder / ".ipynb_checkpoints" / "notes-checkpoint.txt").write_text("a note " * 50)
    assert main(["data", "check", str(folder), "task=ar"]) == 0
    assert not [r for r in caplog.records if "does not read" in r.getMessage()]


def test_null_documents_of_a_parquet_file_are_counted_and_told_how_to_drop(tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = ["the river ran under the old bridge. " * 5] * 40
    for i in (7, 12, 30):
        texts[i] = None
    pq.write_table(pa.table({"body": texts}), tmp_path / "notes.parquet", row_group_size=16)
    from dbparallel.config import DataConfig
    from dbparallel.data.corpus import corpus_index
    from dbparallel.errors import DataError

    with pytest.raises(DataError) as err:
        corpus_index(DataConfig(source="text", path=str(tmp_path / "notes.parquet"),
                                seq_len=16, text_field="body"))
    assert str(err.value) == (
        f"{tmp_path / 'notes.parquet'}: column 'body': row 7 is null (3 rows of the file are "
        f"null): a row holds one document; drop the rows without one (pandas: "
        f"df.dropna(subset=['body']))")


def test_a_json_line_with_half_a_surrogate_pair_is_named_not_a_traceback(tmp_path,
                                                                       capsys) -> None:
    path = tmp_path / "tweets.jsonl"
    good = json.dumps({"text": "a whole emoji \U0001f600 and more text here. " * 4})
    path.write_text(f"{good}\n{good}\n" + '{"text": "cut \\ud83d here"}\n')
    for tokenizer in ("char", "bpe"):  # each tokenizer failed on its own encode, no file named
        err = error_of(capsys, "data", "check", str(path), "task=ar", f"data.tokenizer={tokenizer}",
                       "data.vocab_size=300", "data.seq_len=128")
        assert err == (f'dbparallel: error: {path}: line 3: field "text" holds a lone surrogate '
                       f"\\ud83d (character 4), half of a UTF-16 pair and no character: write "
                       f"the pair whole (\\ud83d\\ude00 is one emoji) or drop it\n"), tokenizer
    path.write_bytes(good.encode() + b'\n{"text": "cesu \xed\xa0\xbd here"}\n')  # raw bytes
    assert "line 2: field \"text\" holds a lone surrogate \\ud83d (character 5)" in \
        corpus_error(path)


def test_a_parquet_string_that_is_not_utf8_names_its_column_and_row(tmp_path) -> None:
    texts = pa.array([b"the river ran under the old bridge. " * 5] * 20 + [b"caf\xe9"],
                     pa.binary()).view(pa.string())  # written as is, as some writers do
    splits = pa.array([b"train"] * 19 + [b"te\xffst", b"train"], pa.binary()).view(pa.string())
    pq.write_table(pa.table({"text": texts}), tmp_path / "a.parquet", row_group_size=8)
    assert corpus_error(tmp_path / "a.parquet") == (
        f"{tmp_path / 'a.parquet'}: column 'text': row 20 is not UTF-8 text (byte 3 of its "
        f"value): write the column as UTF-8 strings")
    pq.write_table(pa.table({"text": texts[:20], "split": splits[:20]}),
                   tmp_path / "b.parquet")
    assert corpus_error(tmp_path / "b.parquet") == (
        f"{tmp_path / 'b.parquet'}: column 'split': row 19 is not UTF-8 text (byte 2 of its "
        f"value): write the column as UTF-8 strings")
