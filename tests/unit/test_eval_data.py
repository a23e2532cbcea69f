"""Loading a network where its data or its run are not as trained: `eval` and `sample` with
--data (data no longer at the data.path it was trained on), a run not trained to the end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from dbparallel import cli
from dbparallel.config import load_config
from dbparallel.data.sources import digits_table
from dbparallel.data.tables import image_table, write_table
from dbparallel.runtime.local import run_local

ROOT = Path(__file__).resolve().parents[2]
FAST = ["train.steps=3", "train.checkpoint_every=3", "train.log_every=1", "metrics.port=0",
        "sample.eval_samples=10"]


def _train(run_dir: Path, *overrides: str) -> str:
    cfg = load_config([ROOT / "jobs" / "tiny_cpu.yaml"], [*FAST, f"run.dir={run_dir}",
                                                          *overrides])
    run_local(cfg, None, progress=False, only_blocks=list(range(cfg.model.blocks)))
    return str(run_dir)


def _eval(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, float]:
    assert cli.main(["eval", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_moved_data_and_an_export_elsewhere_are_evaluated_with_data(tmp_path, capsys) -> None:
    at = tmp_path / "digits.parquet"
    write_table(digits_table(), str(at))
    run = _train(tmp_path / "run", "task=vit", "model.patch_size=4", "data.source=parquet",
                 f"data.path={at}")
    before = _eval(capsys, run)
    export = str(tmp_path / "vit.safetensors")
    assert cli.main(["export", run, "--out", export]) == 0
    (tmp_path / "moved").mkdir()
    moved = at.rename(tmp_path / "moved" / "digits.parquet")
    for source in (run, export):  # the run pinned them at `at`; the export's config names it
        assert cli.main(["eval", source]) == 2
        assert "--data PATH reads them where they are now" in capsys.readouterr().err
        assert _eval(capsys, source, "--data", str(moved)) == before
    out = str(tmp_path / "confusion.json")
    assert cli.main(["sample", export, "--out", out, "--data", str(moved)]) == 0
    assert json.loads(Path(out).read_text())
    text, image = tmp_path / "notes.txt", tmp_path / "0.png"
    text.write_text("the quick brown fox\n")
    image.write_bytes(b"")
    takes = ("this run is an image run (task=vit, data.source=parquet), and --data takes "
             "images: a Parquet file with image and label columns, or a folder of them")
    for argv, found in ((["eval", run, "--data", str(text)], f"{str(text)!r} is named as text, "
                                                             f"not Parquet"),
                        (["sample", run, "--out", out, "--data", str(image)],
                         f"{str(image)!r} is an image, not a data set")):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err  # what this run takes, not how to train on them
        assert f"--data {argv[-1]}: {found}: {takes}" in err
        assert "train" not in err and "data.source=text" not in err


def test_fashion_mnist_read_from_a_path_that_moved_is_evaluated_with_data(tmp_path,
                                                                          capsys) -> None:
    """data.source=fashion_mnist reads its files at data.path where it is set: --data reads
    them where they moved to."""
    at = tmp_path / "fashion"
    at.mkdir()
    rng = np.random.default_rng(0)  # a Parquet table of its columns, 28x28 grey images
    write_table(image_table(rng.random((64, 1, 28, 28)), rng.integers(0, 10, 64)),
                str(at / "train.parquet"))
    run = _train(tmp_path / "run", "data.source=fashion_mnist", f"data.path={at}",
                 "data.image_size=28", "model.patch_size=7")
    before = _eval(capsys, run)
    moved = at.rename(tmp_path / "moved")
    assert cli.main(["eval", run]) == 2
    assert "--data PATH reads them where they are now" in capsys.readouterr().err
    assert _eval(capsys, run, "--data", str(moved)) == before


def test_data_without_a_path_or_other_text_are_refused(tmp_path, capsys) -> None:
    run = _train(tmp_path / "digits")  # data.source=digits: built in, no path
    assert cli.main(["sample", run, "--out", str(tmp_path / "s.png"), "--data", "x"]) == 2
    assert "--data: a dit network's samples read no data" in capsys.readouterr().err
    assert cli.main(["eval", run, "--data", str(tmp_path)]) == 2
    assert ("--data: the network was trained on data.source=digits, which is built in and "
            "read from no path; --data is for data.source=parquet, text, image_folder, "
            "fashion_mnist") in capsys.readouterr().err
    trained, other = tmp_path / "a.txt", tmp_path / "b.txt"
    trained.write_text("the quick brown fox jumps over the lazy dog. " * 200)
    other.write_text("ZYXW VUTS RQPO " * 600)  # characters the network never saw
    run = _train(tmp_path / "text", "task=ar", "model.depth=2", "model.hidden=32",
                 "data.source=text", f"data.path={trained}", "data.seq_len=32",
                 "sample.prompt_len=8", "sample.gen_len=8", "sample.scorer_steps=20")
    assert cli.main(["eval", run, "--data", str(other)]) == 2
    only = ", ".join(f"'{c}' (U+{ord(c):04X})" for c in "OPQRSTUVWX")
    theirs = ", ".join(f"'{c}' (U+{ord(c):04X})" for c in ".abcdefghi")
    assert (f"--data {other}: these texts give another tokenizer than the network's "
            f"(data.tokenizer=char, from the text it was trained on; characters {only} and 2 "
            f"more only in these texts, {theirs} and 17 more only in the network's): the same "
            f"token ids would be other text") in capsys.readouterr().err
    assert cli.main(["eval", run, "--data", str(tmp_path / "gone.txt")]) == 2
    assert capsys.readouterr().err == (f"dbparallel: error: --data: no such file or directory: "
                                       f"'{tmp_path / 'gone.txt'}'\n")
    assert cli.main(["eval", run, "--data", f"{trained} "]) == 2  # a space copied with it
    assert capsys.readouterr().err == (f"dbparallel: error: --data: no such file or directory: "
                                       f"'{trained} ' (it has a space at its end: "
                                       f"'{trained}' is there)\n")
    assert "bpc" in _eval(capsys, run, "--data", str(trained))  # the same text is accepted
    images = tmp_path / "images"
    images.mkdir()
    (images / "0.png").write_bytes(b"")
    assert cli.main(["eval", run, "--data", str(images)]) == 2
    err = capsys.readouterr().err  # what this run takes, not how to train on images
    assert (f"--data {images}: {str(images / '0.png')!r} is an image, not text: this run is a "
            f"text run (task=ar), and --data takes text: a text, JSONL or Parquet file, or a "
            f"folder of them") in err
    assert "train" not in err
    # the text changed where the run trained on it, and this machine's cache lost its
    # tokens: eval names --data, not a resume
    from dbparallel.training.data_pin import pinned_data
    from dbparallel.training.storage import Storage

    shard = next(iter(pinned_data(Storage(run)).splits["train"])).uri
    shutil.rmtree(Path(shard).parent)
    trained.write_text("the quick brown dog jumps over the lazy fox. " * 200)
    assert cli.main(["eval", run]) == 2
    err = capsys.readouterr().err
    assert f"{run} was trained on other data than {trained} now holds" in err
    assert err.rstrip().endswith("--data PATH reads the data at PATH as they are now, other "
                                 "data of the same kind included"), err
    assert "bpc" in _eval(capsys, run, "--data", str(trained))


def test_a_run_not_trained_to_the_end_is_said_so_when_loaded(tmp_path, caplog) -> None:
    import dbparallel

    run = _train(tmp_path / "run", "train.keep_snapshots=2")
    dbparallel.load(run)
    assert "not trained to the end" not in caplog.text  # every block done
    cfg = load_config([ROOT / "jobs" / "tiny_cpu.yaml"], [*FAST, f"run.dir={run}",
                                                          "train.steps=6",
                                                          "train.keep_snapshots=2"])
    run_local(cfg, None, progress=False, only_blocks=[0])  # block 1 stays at step 3
    assert dbparallel.load(run).steps == [6, 3]
    assert (f"{run}: block 1 at step 3 of 6: not trained to the end (the run is training, or "
            f"stopped: `dbparallel status {run}`)") in caplog.text
    caplog.clear()
    dbparallel.load(run, step=3)  # the snapshots of a step asked for: what was asked
    assert "not trained to the end" not in caplog.text
    assert cli.main(["export", run, "--out", str(tmp_path / "x.safetensors")]) == 0
    assert "block 1 at step 3 of 6" in caplog.text
    caplog.clear()  # the export, loaded, says so too
    assert dbparallel.load(str(tmp_path / "x.safetensors")).steps == [6, 3]
    assert (f"{tmp_path / 'x.safetensors'}: block 1 at step 3 of 6: not trained to the end "
            f"(exported before they were)") in caplog.text


def _folder(root: Path, classes: list[str], per_class: int = 2) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for n in range(per_class):
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(
                root / name / f"{n}.png")
    return root


def test_other_class_folders_are_labelled_by_the_networks_class_names(tmp_path,
                                                                      capsys) -> None:
    """A folder given by --data with a class fewer (or more) than the run's is labelled by
    the folders' names, not their positions: sorted alone, cat and dog would be 0 and 1."""
    from dbparallel.data.reshard import reshard
    from dbparallel.data.sources import open_data

    data = _folder(tmp_path / "pets", ["bird", "cat", "dog"])
    run = _train(tmp_path / "run", "task=vit", "model.patch_size=4",
                 "data.source=image_folder", f"data.path={data}", "data.num_classes=3")
    out = tmp_path / "confusion.json"
    subset = _folder(tmp_path / "subset", ["cat", "dog"], per_class=3)
    assert cli.main(["sample", run, "--out", str(out), "--data", str(subset)]) == 0
    confusion = json.loads(out.read_text())
    assert [sum(r) for r in confusion["confusion"]] == [0, 3, 3]  # cat (1) and dog (2)
    assert confusion["classes"] == ["bird", "cat", "dog"]  # the rows' names
    for source in (run, str(tmp_path / "vit.safetensors")):  # an export keeps the names
        if source != run:
            assert cli.main(["export", run, "--out", source]) == 0
        more = _folder(tmp_path / f"more{len(source)}", ["ant", "cat"])
        assert cli.main(["eval", source, "--data", str(more)]) == 2
        assert capsys.readouterr().err.endswith(
            f"--data: {more / 'ant'}: class folder 'ant' is not among the network's classes "
            f"(bird, cat, dog)\n")
    # an export reads its config's data.path as it is now: a class folder gone shifts nothing
    shutil.move(data / "bird", tmp_path / "bird")
    export = str(tmp_path / "vit.safetensors")
    assert cli.main(["sample", export, "--out", str(out)]) == 0
    assert [sum(r) for r in json.loads(out.read_text())["confusion"]] == [0, 2, 2]
    shutil.move(tmp_path / "bird", data / "bird")
    # a generator's classes are named as well: its samples are scored against its labels
    dit = _train(tmp_path / "dit", "model.patch_size=4", "data.source=image_folder",
                 f"data.path={data}", "data.num_classes=3")
    assert cli.main(["eval", dit, "--data", str(more)]) == 2
    assert "class folder 'ant' is not among the network's classes" in capsys.readouterr().err
    # Parquet written from a folder keeps its names, and its labels: Parquet of another
    # folder is refused, naming the first label that differs
    from dbparallel.config import DataConfig

    for folder, table in ((data, tmp_path / "pets.parquet"),
                          (subset, tmp_path / "subset.parquet")):
        reshard(open_data(DataConfig(source="image_folder", path=str(folder), num_classes=3)),
                str(table), 64)
    run = _train(tmp_path / "run_parquet", "task=vit", "model.patch_size=4",
                 "data.source=parquet", f"data.path={tmp_path / 'pets.parquet'}",
                 "data.num_classes=3")
    assert cli.main(["eval", run, "--data", str(table)]) == 2
    assert (f"--data {table}: its labels name other classes (cat, dog) than the network's "
            f"(bird, cat, dog): label 0 is 'cat' there and 'bird' to the network") in \
        capsys.readouterr().err


def test_images_of_another_size_name_the_networks_size_not_data_resize(tmp_path,
                                                                       capsys) -> None:
    """A trained network's data.resize is fixed: eval, sample and predict given images of
    another size say which size it takes, not the key that would change what it is; predict
    names every bad image."""
    from PIL import Image

    run = _train(tmp_path / "run", "task=vit", "model.patch_size=4",
                 "data.source=image_folder", f"data.path={_folder(tmp_path / 'pets', ['a', 'b'])}",
                 "data.num_classes=2")
    big = tmp_path / "big"
    for name in ("a", "b"):
        (big / name).mkdir(parents=True)
        Image.new("L", (16, 12)).save(big / name / "0.png")
    out = tmp_path / "confusion.json"
    for argv in (["eval", run, "--data", str(big)],
                 ["sample", run, "--out", str(out), "--data", str(big)]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert "is 16x12, expected 8x8 (data.image_size; the network takes 8x8 images: " \
               "resize them to it first)" in err, err
        assert "data.resize" not in err
    (big / "b" / "1.png").write_bytes(b"not a png")  # predict names every bad image
    Image.new("L", (8, 8)).save(big / "b" / "2.png")
    assert cli.main(["predict", run, str(big), "--batch", "2"]) == 2
    out, err = capsys.readouterr()
    assert [line.split("\t")[0] for line in out.splitlines()] == [str(big / "b" / "2.png")]
    err = err.splitlines()  # the image it could read is classified, the others named
    assert err[0] == "dbparallel: error: 3 bad images, left out of the predictions:"
    assert [line.strip().split(": ")[0] for line in err[1:]] == \
        [str(big / "a" / "0.png"), str(big / "b" / "0.png"), str(big / "b" / "1.png")]
    assert "the network takes 8x8 images" in err[1] and "not a readable image" in err[3]
    # --resize: cut and resized as data.resize would, the pixels a resized copy has
    import io

    import numpy as np
    import pyarrow as pa

    from dbparallel.config import DataConfig
    from dbparallel.data.encoded import decode_encoded

    photo = big / "photo.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (12, 16), np.uint8)).save(photo)
    pixels = decode_encoded(pa.array([photo.read_bytes()]), DataConfig(image_size=8,
                                                                         resize=True))
    buffer = io.BytesIO()
    Image.fromarray(pixels.reshape(8, 8)).save(buffer, "PNG")
    (tmp_path / "resized.png").write_bytes(buffer.getvalue())
    predictions = []
    for argv in ([str(photo), "--resize"], [str(tmp_path / "resized.png")]):
        assert cli.main(["predict", run, *argv, "--json"]) == 0
        predictions.append({k: v for k, v in json.loads(capsys.readouterr().out).items()
                            if k != "input"})
    assert predictions[0] == predictions[1]


def test_a_dit_report_says_how_many_rows_and_which_split_it_was_scored_on(tmp_path) -> None:
    """The embedded digits have no test split: the report says the in-domain features came
    from training rows (eval_on_test 0), as vit's and the text tasks' reports do; with a
    ``split`` column, from the test rows."""
    table = digits_table()
    cfg = load_config([ROOT / "jobs" / "tiny_cpu.yaml"], [*FAST, f"run.dir={tmp_path / 'a'}"])
    assembly = run_local(cfg, None, progress=False)["assembly"]
    assert (assembly["eval_on_test"], assembly["eval_rows"]) == (0, table.num_rows)
    split = np.where(np.arange(table.num_rows) % 5 == 0, "test", "train")
    write_table(table.append_column("split", pa.array(split)), str(tmp_path / "d.parquet"))
    cfg = load_config([ROOT / "jobs" / "tiny_cpu.yaml"],
                      [*FAST, f"run.dir={tmp_path / 'b'}", "data.source=parquet",
                       f"data.path={tmp_path / 'd.parquet'}"])
    assembly = run_local(cfg, None, progress=False)["assembly"]
    assert (assembly["eval_on_test"], assembly["eval_rows"]) == (1, (split == "test").sum())
