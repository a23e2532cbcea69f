"""dbparallel.load and the network's verbs per task, export round trips, and the commands
that use a trained network (generate, predict, export), on tiny runs trained here."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

import dbparallel
from dbparallel import cli
from dbparallel.config import load_config
from dbparallel.errors import RunDirError, UserError
from dbparallel.runtime.local import run_local
from dbparallel.training.loading import export_run

ROOT = Path(__file__).resolve().parents[2]
FAST = ["train.steps=3", "train.checkpoint_every=3", "train.log_every=1", "metrics.port=0"]
RECIPES = {
    "dit": (["jobs/tiny_cpu.yaml"], []),
    "vit": (["jobs/tiny_cpu.yaml"], ["task=vit", "model.patch_size=4"]),
    "ar": (["jobs/ar_shakespeare_tiny.yaml"], ["model.depth=2", "model.hidden=32"]),
    "mdm": (["jobs/mdm_shakespeare_tiny.yaml"], ["model.depth=2", "model.hidden=32"]),
    "looped": (["jobs/looped_shakespeare_tiny.yaml"], ["model.hidden=32"]),
}
TEXT = "To be, or not to be, that is the question."


def _train(task: str, run_dir: Path, *extra: str, only: list[int] | None = None) -> str:
    files, overrides = RECIPES[task]
    cfg = load_config([ROOT / f for f in files], [*overrides, *FAST, f"run.dir={run_dir}",
                                                  *extra])
    # every block, without the assembly: the verbs are the point here
    run_local(cfg, None, progress=False, only_blocks=only or list(range(cfg.model.blocks)))
    return str(run_dir)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("runs")  # data caches: the session's (conftest.py)
    return {task: _train(task, base / task) for task in RECIPES}


def test_dit_samples_images_of_the_asked_classes(runs: dict[str, str]) -> None:
    net = dbparallel.load(runs["dit"])
    assert net.verbs == ("sample",) and net.steps == [3, 3]
    a = net.sample([0, 1, 2], steps=2, seed=5)
    assert a.shape == (3, 1, 8, 8) and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, net.sample([0, 1, 2], steps=2, seed=5))
    assert not torch.equal(a, net.sample([0, 1, 2], steps=2, seed=6))
    assert not torch.equal(a, net.sample([0, 1, 2], steps=2, seed=5, cfg_scale=3.0))
    with pytest.raises(UserError, match="classes are 0..9"):
        net.sample([10])
    with pytest.raises(UserError, match="a dit network cannot predict; it can sample"):
        net.predict(torch.zeros(1, 1, 8, 8))


def test_a_loaded_network_leaves_the_program_s_torch_settings_as_they_were(
        runs: dict[str, str]) -> None:
    """Its verbs run under the precision of its run (on the CPU: denormals flushed to zero),
    and put the program's own settings back; loading changes none."""
    from dbparallel.training.precision import _flushing

    before = _flushing()
    torch.set_flush_denormal(False)
    try:
        net = dbparallel.load(runs["vit"])
        assert not _flushing()
        seen: list[bool] = []  # the setting as the task's own predict runs
        predict = net.task.predict
        net.task.predict = lambda *a, **k: (seen.append(_flushing()), predict(*a, **k))[1]
        net.predict(torch.zeros(1, 1, 8, 8))
        assert seen == [True] and not _flushing()
    finally:
        torch.set_flush_denormal(before)


def test_vit_predicts_logits_from_pixels(runs: dict[str, str]) -> None:
    net = dbparallel.load(runs["vit"])
    pixels = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    logits = net.predict(pixels)
    assert logits.shape == (5, 10) and torch.isfinite(logits).all()
    assert torch.allclose(logits, net.predict(pixels.float() / 255), atol=1e-6)
    assert torch.allclose(net.predict(pixels[0]), logits[:1], atol=1e-6)  # one image
    with pytest.raises(UserError, match=r"expected shape \(N, 1, 8, 8\).*got \(2, 3, 8, 8\)"):
        net.predict(torch.zeros(2, 3, 8, 8))
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        net.predict(torch.full((1, 1, 8, 8), 2.0))
    with pytest.raises(UserError, match="cannot generate"):
        net.generate("a")


@pytest.mark.parametrize("task", ["ar", "looped", "mdm"])
def test_text_networks_generate_and_score_text(runs: dict[str, str], task: str) -> None:
    net = dbparallel.load(runs[task])
    assert net.verbs == ("generate", "bpc", "log_likelihood")
    out = net.generate("ROMEO: ", max_new=6, seed=1)
    assert isinstance(out, str) and len(out) == 6  # characters: one per token
    assert out == net.generate("ROMEO: ", max_new=6, seed=1)
    # data.vocab_size=128 ids, about 60 of them characters: a barely trained network at a
    # high temperature would draw the others (U+FFFD) within a few tokens
    hot = net.generate("ROMEO: ", max_new=40, seed=2, temperature=3.0)
    assert len(hot) == 40 and "\ufffd" not in hot, hot
    both = net.generate(["ab", "cd"], max_new=3, temperature=0)
    assert len(both) == 2 and all(len(t) == 3 for t in both)
    with pytest.raises(UserError, match="temperature: must be a finite number >= 0"):
        net.generate("ab", temperature=-1)
    bpc = net.bpc([TEXT, TEXT + TEXT])
    assert 0 < bpc < 20
    if task != "mdm":  # the chain's first step: report.json's bpc_sigma_max, a likelihood
        _likelihood_is_the_first_steps(net)
    short, long = net.log_likelihood([TEXT, TEXT * 3])  # longer than data.seq_len: windows
    assert long < short < 0
    with pytest.raises(UserError, match="^prompt: .*'\u00e9' \\(U\\+00E9\\) is not in the "
                       "vocabulary of this run"):
        net.generate("caf\u00e9")
    with pytest.raises(UserError, match="^texts\\[1\\]: .*'\u00e9' \\(U\\+00E9\\) is not in "
                       "the vocabulary"):
        net.log_likelihood(["ab", "caf\u00e9"])
    assert net.bpc(iter([TEXT, TEXT + TEXT])) == bpc  # any iterable of strings
    # arguments of another type: the argument named, not a TypeError from inside
    for call, said in ((lambda: net.generate(123), "prompt: expected a string or a list"),
                       (lambda: net.generate("ab", temperature="hot"), "temperature: expected"),
                       (lambda: net.generate("ab", max_new=2.5), "max_new: expected an integer"),
                       (lambda: net.bpc(["ab", 3]), "texts: expected a string or a list")):
        with pytest.raises(UserError, match=f"^{said}"):
            call()
    with pytest.raises(UserError, match="cannot sample"):
        net.sample([0])


def _likelihood_is_the_first_steps(net) -> None:
    """An ar or looped chain's bpc is its first step's cross-entropy (the network's own
    p(x_i | x_<i)), not that of the final logits, which measures the sampler."""
    import torch

    from dbparallel.training.seeding import generator

    ids = torch.tensor(net._encode(TEXT[:net.cfg.data.seq_len]))
    both = net.task.bpc(net.blocks, ids[None], generator(net.cfg.run.seed, "api-bpc", 0, 0))
    # the key matters: the two differ by far more than the tolerance below (7e-4 measured)
    assert both["bpc"] != pytest.approx(both["bpc_sigma_max"], rel=1e-5)
    assert net.bpc(TEXT[:net.cfg.data.seq_len]) == pytest.approx(both["bpc_sigma_max"] * (
        len(ids) - 1) / len(net.tokenizer.decode(ids[1:])), rel=1e-6)


def test_mdm_generation_fills_one_row(runs: dict[str, str]) -> None:
    net = dbparallel.load(runs["mdm"])
    assert len(net.generate("", seed=0)) == net.cfg.data.seq_len  # unconditional: a row
    assert len(net.generate("abc")) == net.cfg.data.seq_len - 3
    with pytest.raises(UserError, match="max_new: an MDM row holds data.seq_len=64 tokens, "
                                        "the prompt 3: max_new must lie in 1..61, got 62"):
        net.generate("abc", max_new=62)
    with pytest.raises(UserError, match="prompt: 64 tokens, and an MDM row holds "
                                        "data.seq_len=64: leave room"):
        net.generate("a" * 64)
    with pytest.raises(UserError, match="sample: an mdm network cannot sample"):
        net.sample([0])


def test_generation_shows_progress_and_warns_past_the_trained_length(
        runs: dict[str, str], capsys, caplog) -> None:
    ar, mdm = dbparallel.load(runs["ar"]), dbparallel.load(runs["mdm"])
    quiet = ar.generate("KING", max_new=5, seed=3)
    assert not capsys.readouterr().err
    assert ar.generate("KING", max_new=5, seed=3, progress=True) == quiet  # same draws
    assert "/5 [" in capsys.readouterr().err  # a bar of 5 tokens (counted: test_text_models)
    quiet = mdm.generate("abc", seed=0)
    assert mdm.generate("abc", seed=0, progress=True) == quiet
    assert f"/{mdm.cfg.sample.steps} [" in capsys.readouterr().err  # of the unmasking steps
    seq_len = ar.cfg.data.seq_len
    with caplog.at_level("WARNING"):
        ar.generate("KING", max_new=seq_len - 4)  # exactly a trained row: no warning
        assert not caplog.records
        assert len(ar.generate("KING", max_new=seq_len - 3)) == seq_len - 3
        ar.generate("KING", max_new=seq_len - 3, seed=1)  # said once (e.g. --samples 3)
    assert caplog.text.count(f"the prompt's 4 tokens and {seq_len - 3} new ones go past "
                             f"data.seq_len={seq_len}") == 1


def test_generation_and_sample_commands_name_what_is_wrong(runs: dict[str, str], tmp_path,
                                                           capsys) -> None:
    net = dbparallel.load(runs["ar"])
    with pytest.raises(UserError, match="max_new: must be >= 1, got 0"):
        net.generate("ab", max_new=0)
    cases = [(["generate", runs["ar"], "--prompt", "ab", "--samples", "0"],
              "--samples: must be >= 1, got 0"),
             (["generate", runs["mdm"], "--prompt", "abc", "--max-new", "62"],
              "--max-new: an MDM row holds data.seq_len=64 tokens, the prompt 3: --max-new "
              "must lie in 1..61, got 62"),
             (["generate", runs["ar"], "--prompt", "ab", "--max-new", "0"],
              "--max-new: must be >= 1, got 0"),
             (["sample", runs["ar"], "--out", str(tmp_path / "x.png")],
              "an ar run's samples are a .txt file"),
             (["sample", runs["vit"], "--out", str(tmp_path / "x.png")],
              "a vit run's samples are a .json file")]
    for args, message in cases:
        assert cli.main(args) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("task", list(RECIPES))
def test_export_round_trip_gives_the_same_network(runs: dict[str, str], task: str,
                                                  tmp_path: Path, capsys) -> None:
    out = tmp_path / "net.safetensors"
    assert cli.main(["export", runs[task], "--out", str(out)]) == 0
    at = "1 block at step 3" if task == "looped" else "2 blocks at steps 3, 3"
    assert capsys.readouterr().out.startswith(f"wrote {out}: {task}, {at}; load it with ")
    a, b = dbparallel.load(runs[task]), dbparallel.load(out)
    assert b.steps == a.steps and b.cfg.task == task
    for x, y in zip(a.blocks, b.blocks, strict=True):
        sx, sy = x.state_dict(), y.state_dict()
        assert sx.keys() == sy.keys() and all(torch.equal(sx[k], sy[k]) for k in sx)
    if task == "dit":
        assert torch.equal(a.sample([1, 2], steps=2), b.sample([1, 2], steps=2))
    elif task == "vit":
        images = torch.rand(3, 1, 8, 8)
        assert torch.equal(a.predict(images), b.predict(images))
    else:
        assert a.generate("KING", max_new=5) == b.generate("KING", max_new=5)
        assert a.bpc(TEXT) == b.bpc(TEXT)


def test_an_export_loads_without_ray_or_the_run_directory(runs: dict[str, str],
                                                          tmp_path: Path) -> None:
    out = tmp_path / "ar.safetensors"
    export_run(runs["ar"], str(out))
    expected = dbparallel.load(runs["ar"]).generate("KING", max_new=5, seed=3)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import sys, dbparallel; net = dbparallel.load(sys.argv[1]); "
            "print(net.generate('KING', max_new=5, seed=3)); "
            "assert 'ray' not in sys.modules, 'ray was imported'")
    env = {**os.environ, "DBPARALLEL_CACHE": str(elsewhere / "cache")}  # no data cached there
    done = subprocess.run([sys.executable, "-c", code, str(out)], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.rstrip("\n") == expected


def test_export_refuses_a_missing_block_or_another_config(tmp_path: Path) -> None:
    half = _train("dit", tmp_path / "half", only=[0])
    with pytest.raises(RunDirError, match=r"block\(s\) \[1\] have no snapshot"):
        export_run(half, str(tmp_path / "x.safetensors"))
    assert cli.main(["export", half, "--out", str(tmp_path / "x.safetensors")]) == 2
    assert not (tmp_path / "x.safetensors").exists()
    full = _train("dit", tmp_path / "full")
    config = Path(full) / "config.yaml"
    config.write_text(config.read_text().replace("hidden: 32", "hidden: 48"))
    with pytest.raises(RunDirError, match="block 0: trained with other values of model.hidden"):
        export_run(full, str(tmp_path / "y.safetensors"))


def test_a_damaged_export_is_refused(runs: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "net.safetensors"
    export_run(runs["vit"], str(out))
    data = bytearray(out.read_bytes())
    data[-5] ^= 0xFF  # a weight's byte
    out.write_bytes(bytes(data))
    with pytest.raises(RunDirError, match="do not match the file's checksum"):
        dbparallel.load(out)
    out.write_bytes(b"not a safetensors file at all")
    with pytest.raises(RunDirError, match="not a dbparallel export"):
        dbparallel.load(out)
    with pytest.raises(RunDirError, match="no such run directory or export file"):
        dbparallel.load(tmp_path / "missing")


def test_generate_command_prints_continuations(runs: dict[str, str], capsys) -> None:
    assert cli.main(["generate", runs["ar"], "--prompt", "KING", "--max-new", "7",
                     "--samples", "2", "--seed", "4"]) == 0
    out = capsys.readouterr().out
    net = dbparallel.load(runs["ar"])
    first, second = (net.generate("KING", max_new=7, seed=s) for s in (4, 5))
    assert out == f"--- sample 0\nKING{first}\n--- sample 1\nKING{second}\n"
    assert cli.main(["generate", runs["ar"], "--prompt", "caf\u00e9"]) == 2
    assert "'\u00e9' (U+00E9) is not in the vocabulary" in capsys.readouterr().err
    assert cli.main(["generate", runs["vit"], "--prompt", "a"]) == 2
    assert f"use `dbparallel predict {runs['vit']} IMAGES`" in capsys.readouterr().err
    assert cli.main(["generate", runs["dit"], "--prompt", "a"]) == 2  # the command it takes
    assert (f"generate: {runs['dit']} is a dit network (image generation); generate continues "
            f"a prompt with a text network (mdm, ar, looped); for this run use `dbparallel "
            f"sample {runs['dit']} --out FILE.png`") in capsys.readouterr().err


def _png(path: Path, pixels: np.ndarray) -> None:
    Image.fromarray(pixels, mode="L").save(path)


def test_predict_command_reads_files_folders_and_tables(runs: dict[str, str], tmp_path: Path,
                                                        capsys) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 8, 8), dtype=np.uint8)
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for i, path in enumerate([folder / "a.png", folder / "b.png", folder / "sub" / "c.png"]):
        _png(path, images[i])
    expected = dbparallel.load(runs["vit"]).predict(torch.from_numpy(images)[:, None])
    classes = [int(c) for c in expected.argmax(dim=1)]

    assert cli.main(["predict", runs["vit"], str(folder / "a.png")]) == 0
    name, cls, _ = capsys.readouterr().out.strip().split("\t")
    assert name.endswith("a.png") and int(cls) == classes[0]

    assert cli.main(["predict", runs["vit"], str(folder), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["class"] for r in rows] == classes and rows[2]["input"].endswith("sub/c.png")
    assert all(set(r) == {"input", "class", "name", "probability"} and r["name"] is None
               and 0 < r["probability"] <= 1 for r in rows)  # the keys docs/api.md names

    def encoded(i: int) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(images[i], mode="L").save(buffer, format="PNG")
        return buffer.getvalue()

    table = tmp_path / "t.parquet"
    pq.write_table(pa.table({"image": [encoded(i) for i in range(3)], "label": [0, 0, 0]}),
                   table)
    assert cli.main(["predict", runs["vit"], str(table), "--json"]) == 0
    assert [json.loads(x)["class"] for x in capsys.readouterr().out.splitlines()] == classes
    raw = tmp_path / "raw.parquet"
    pq.write_table(pa.table({"image": [images[i].reshape(-1).tolist() for i in range(3)]}), raw)
    assert cli.main(["predict", runs["vit"], str(raw), "--json"]) == 0
    assert [json.loads(x)["class"] for x in capsys.readouterr().out.splitlines()] == classes

    big = tmp_path / "big.png"
    _png(big, np.zeros((9, 9), dtype=np.uint8))
    assert cli.main(["predict", runs["vit"], str(big)]) == 2
    assert re.search(r"big\.png: is 9x9, expected 8x8 \(data.image_size; the network takes "
                     r"8x8 images: resize them to it first, or pass --resize to cut and "
                     r"resize them as data.resize does\)", capsys.readouterr().err)
    assert cli.main(["predict", runs["dit"], str(folder)]) == 2
    err = capsys.readouterr().err
    assert "predict classifies images with a vit network" in err
    assert f"use `dbparallel sample {runs['dit']} --out FILE.png`" in err
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"image": pa.array([], pa.binary())}), empty)
    assert cli.main(["predict", runs["vit"], str(empty)]) == 2
    assert f"predict: {empty} holds no image" in capsys.readouterr().err


def test_the_api_guide_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                            not_joined: None) -> None:
    """docs/api.md's Python examples, run as written (in a program that joined no Ray
    instance) on the runs they name."""
    monkeypatch.chdir(tmp_path)
    _train("dit", Path("runs/tiny-cpu"))
    _train("ar", Path("runs/ar-shakespeare-tiny"))
    (tmp_path / "jobs").symlink_to(ROOT / "jobs")
    guide = (ROOT / "docs" / "api.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", guide, flags=re.S)
    assert len(blocks) == 4
    for code in blocks:
        exec(compile(code, "docs/api.md", "exec"), {})
    assert (tmp_path / "tiny-cpu.safetensors").exists()
    assert (tmp_path / "runs" / "tiny-latents" / "samples.safetensors").exists()
    assert (tmp_path / "runs" / "tiny-python" / "report.json").exists()


def test_an_export_path_splits_into_its_folder_and_name() -> None:
    from dbparallel.training.storage import split_uri

    assert split_uri("net.safetensors") == (".", "net.safetensors")
    assert split_uri("/a/b/net.safetensors") == ("/a/b", "net.safetensors")
    assert split_uri("s3://bucket/x/net.safetensors?endpoint_override=h:1&scheme=http") == (
        "s3://bucket/x?endpoint_override=h:1&scheme=http", "net.safetensors")


def test_train_from_python_is_the_train_command(tmp_path: Path, capsys) -> None:
    """dbparallel.train(recipe, overrides) trains what `dbparallel train` trains, returns the
    report it writes, and raises where the command exits 2."""
    tiny = ROOT / "jobs" / "tiny_cpu.yaml"
    report = dbparallel.train(tiny, overrides={"run.dir": tmp_path / "api", "train.steps": 6,
                                               "train.block_steps": [6, 4],
                                               "metrics.port": 0}, local=True, progress=False)
    assert [r["steps"] for r in report["per_block"]] == [6, 4]
    assert report == json.loads((tmp_path / "api" / "report.json").read_text())
    assert cli.main(["train", str(tiny), "--local", f"run.dir={tmp_path / 'cli'}",
                     "train.steps=6", "train.block_steps=[6,4]", "metrics.port=0"]) == 0
    command = json.loads((tmp_path / "cli" / "report.json").read_text())
    assert [r["final_loss"] for r in report["per_block"]] == \
        [r["final_loss"] for r in command["per_block"]]  # bit for bit
    assert report["assembly"] == command["assembly"]
    with pytest.raises(UserError, match=r"model.depth: 3 layers do not split equally"):
        dbparallel.train(tiny, overrides=["model.depth=3", f"run.dir={tmp_path / 'bad'}"],
                         local=True)
    assert not (tmp_path / "bad").exists()
    three = tmp_path / "three_steps.yaml"
    three.write_text("train:\n  steps: 3\n")
    # recipes as a list, and mixed with single ones: merged in order
    only = dbparallel.train([tiny], three, local=True, blocks=[1], progress=False,
                            overrides=[f"run.dir={tmp_path / 'one'}", "metrics.port=0"])
    assert [r["block"] for r in only["per_block"]] == [1] and only["assembly"] == {}
    assert only["per_block"][0]["steps"] == 3  # the second recipe's steps


def test_train_in_this_process_leaves_torch_as_it_found_it(tmp_path: Path) -> None:
    """A local run trains with runtime.torch_threads threads and flushes denormal floats:
    the program that called it got back torch with one thread and denormals read as 0. Nor
    do the program's random draws depend on the call (it drew from their stream)."""
    from dbparallel.training.precision import _flushing

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    torch.set_flush_denormal(False)
    drawn = torch.randn(3, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    try:
        dbparallel.train(ROOT / "jobs" / "tiny_cpu.yaml", local=True, progress=False,
                         overrides={"run.dir": tmp_path / "run", "train.steps": 2,
                                    "metrics.port": 0, "runtime.torch_threads": 1})
        assert (torch.get_num_threads(), _flushing()) == (2, False)
        assert torch.equal(torch.randn(3), drawn)
        torch.manual_seed(0)
        dbparallel.export(tmp_path / "run", tmp_path / "net.safetensors")
        dbparallel.load(tmp_path / "run")
        dbparallel.load(tmp_path / "net.safetensors")
        assert torch.equal(torch.randn(3), drawn)
    finally:
        torch.set_num_threads(threads)


def test_train_names_a_recipe_that_is_no_path() -> None:
    """A mapping of keys given as the recipe is told where keys go, before anything runs."""
    with pytest.raises(TypeError, match=r"^recipes: paths of YAML files, got dict "
                                        r"\{'task': 'ar'\}; config keys go in overrides="):
        dbparallel.train({"task": "ar"}, local=True)
    with pytest.raises(TypeError, match=r"^recipes: paths of YAML files, got int 3$"):
        dbparallel.train([ROOT / "jobs" / "tiny_cpu.yaml", 3], local=True)


def test_train_overrides_from_python_values_are_read_back_as_given() -> None:
    from dbparallel import _override_items

    items = _override_items({"run": {"dir": Path("/tmp/x y"), "name": "yes"},
                             "model.hidden": None, "train.lr": 1e-3, "train.compile": True,
                             "data.path": "s3://b/x?endpoint_override=h:1#a",
                             "data.source": "parquet",
                             "train.block_steps": (6, 4)})
    cfg = load_config([ROOT / "jobs" / "tiny_cpu.yaml"], items)
    assert (cfg.run.dir, cfg.run.name, cfg.train.lr, cfg.train.compile) == \
        ("/tmp/x y", "yes", 1e-3, True)
    assert cfg.model.hidden is None  # null, as model.hidden=null: the preset's width
    assert cfg.data.path == "s3://b/x?endpoint_override=h:1#a"
    assert cfg.train.block_steps == [6, 4]
    odd = load_config([ROOT / "jobs" / "tiny_cpu.yaml"], _override_items({"run.name": "[a]: b"}))
    assert odd.run.name == "[a]: b"
    assert _override_items(["train.steps=5"]) == ["train.steps=5"]
    assert _override_items(None) == []  # overrides=None: no overrides, as the default ()
    with pytest.raises(TypeError, match="not one string"):
        _override_items("train.steps=5")
