"""What a caller of the Python API is told about an argument it gets wrong: the argument named
in a UserError, before anything is written or computed."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

import dbparallel
from dbparallel import cli
from dbparallel.config import load_config
from dbparallel.errors import UserError
from dbparallel.runtime.local import run_local
from dbparallel.training.lease import BlockLease
from dbparallel.training.storage import Storage

ROOT = Path(__file__).resolve().parents[2]
FAST = ["train.steps=3", "train.checkpoint_every=3", "train.log_every=1", "metrics.port=0"]


def _train(run_dir: Path, *overrides: str, only: list[int] | None = None) -> str:
    cfg = load_config([ROOT / "jobs" / "tiny_cpu.yaml"], [*overrides, *FAST,
                                                           f"run.dir={run_dir}"])
    run_local(cfg, None, progress=False, only_blocks=only or list(range(cfg.model.blocks)))
    return str(run_dir)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("runs")
    return {"dit": _train(base / "dit"),
            "vit": _train(base / "vit", "task=vit", "model.patch_size=4")}


def test_export_refuses_a_folder_or_a_file_of_a_run_directory(runs: dict[str, str],
                                                              tmp_path: Path, capsys) -> None:
    run = Path(runs["dit"])
    config = (run / "config.yaml").read_bytes()
    for out, said in ((tmp_path, f"out {tmp_path}: is a folder; name a file"),
                      (run / "config.yaml", "which writing would replace"),
                      (run / "report.json", "which writing would replace"),
                      ("", "out: give the path of the file to write"),
                      (tmp_path / ("a" * 300), "cannot be written (File name too long)")):
        if out == run / "report.json":
            out.write_text("{}")
        with pytest.raises(UserError, match=re.escape(said)):
            dbparallel.export(run, out)
    assert (run / "config.yaml").read_bytes() == config  # the run is untouched
    assert dbparallel.load(run).steps == [3, 3]
    assert cli.main(["export", str(run), "--out", str(tmp_path)]) == 2
    assert f"--out {tmp_path}: is a folder" in capsys.readouterr().err
    written = run / "net.safetensors"  # another file in a run directory: allowed
    dbparallel.export(run, written)
    assert dbparallel.load(written).steps == [3, 3]


def test_predict_names_images_of_another_kind(runs: dict[str, str], tmp_path: Path) -> None:
    net = dbparallel.load(runs["vit"])
    png = tmp_path / "digit.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(png)
    expected = "images: expected a tensor or array of pixels (N, 1, 8, 8) or one image (1, 8, 8)"
    for value, kind in ((str(png), "str"), (png, "PosixPath"), (Image.open(png), "PngImageFile"),
                        ([torch.zeros(1, 8, 8)] * 2, "list")):
        with pytest.raises(UserError, match=re.escape(expected) + f".*got {kind}"):
            net.predict(value)
    fit = "torch.from_numpy(np.array(ImageOps.fit(image.convert('L'), (8, 8))))[None]"
    with pytest.raises(UserError, match=re.escape(f"; pass its pixels: {fit} (PIL's")):
        net.predict(Image.open(png))
    with pytest.raises(UserError, match=re.escape("; `dbparallel predict RUN_DIR FILE` reads "
                                                  f"image files, or open it with Pillow and "
                                                  f"pass {fit}")):
        net.predict(png)
    image = Image.open(png)  # the hint, as given, makes what predict takes
    assert net.predict(torch.from_numpy(np.array(ImageOps.fit(image.convert('L'), (8, 8))))[None]
                       ).shape == (1, 10)
    with pytest.raises(UserError, match=r"got \(8, 8\); one image without its channel"):
        net.predict(np.asarray(Image.open(png)))  # a grey image as PIL gives it
    with pytest.raises(UserError, match=r"got \(8, 8, 1\); channels last\?"):
        net.predict(torch.zeros(8, 8, 1))
    with pytest.raises(UserError, match="torch.int64 pixels; pass uint8"):
        net.predict(torch.full((1, 1, 8, 8), 200))
    assert net.predict(torch.zeros(0, 1, 8, 8)).shape == (0, 10)  # as sample([]) is empty
    for seed, got in (("a", "str 'a'"), (1.5, "float 1.5")):  # were taken as seeds
        said = f"seed: expected an integer, got {got}"
        with pytest.raises(UserError, match="^" + re.escape(said)):
            net.predict(torch.zeros(1, 8, 8), seed=seed)
    assert torch.equal(net.predict(torch.stack([torch.zeros(1, 8, 8)] * 2)),
                       net.predict(np.zeros((2, 1, 8, 8), np.float32)))


def test_sample_names_labels_that_are_no_class_numbers(runs: dict[str, str]) -> None:
    net = dbparallel.load(runs["dit"])
    said = "labels: expected class numbers 0..9 (an integer, or a list or tensor of them)"
    for labels, got in ((["a"], "got list"), ("3", "got str"), (None, "got NoneType"),
                        (torch.tensor([1.7]), "got torch.float32"), ([True], "got torch.bool")):
        with pytest.raises(UserError, match=re.escape(said) + f", {got}"):
            net.sample(labels, steps=1)
    with pytest.raises(UserError, match=re.escape(said) + r", got 2 dimensions \(2, 2\); "
                                                          r"\.flatten\(\) them"):
        net.sample(torch.tensor([[0, 1], [2, 3]]), steps=1)  # gave 4 images without a word
    whole = net.sample(np.array([1.0, 2.0]), steps=1)  # whole numbers of any dtype
    assert torch.equal(whole, net.sample([1, 2], steps=1))


def test_sample_names_steps_cfg_scale_and_seed_of_another_kind(runs: dict[str, str]) -> None:
    # steps=1.5 used to fail deep inside as "model.blocks must be >= 1", "3" with a TypeError,
    # cfg_scale=nan drew NaN images, and seed=1.5 a stream no integer seed gives
    net = dbparallel.load(runs["dit"])
    for kwargs, said in (({"steps": 1.5}, "steps: expected an integer, got float 1.5"),
                         ({"steps": "3"}, "steps: expected an integer, got str '3'"),
                         ({"cfg_scale": "2"}, "cfg_scale: expected a number, got str '2'"),
                         ({"cfg_scale": float("nan")}, "cfg_scale: must be a finite number >= 0"),
                         ({"cfg_scale": -1.0}, "cfg_scale: must be a finite number >= 0"),
                         ({"seed": 1.5}, "seed: expected an integer, got float 1.5")):
        with pytest.raises(UserError, match="^" + re.escape(said)):
            net.sample([0], **kwargs)
    assert net.sample([0], steps=np.int64(1), cfg_scale=np.float32(1.0)).shape == (1, 1, 8, 8)


def test_a_step_that_is_no_step_number_is_named(runs: dict[str, str], tmp_path: Path) -> None:
    # "3" used to look for a snapshot of a step no block has, and say that step 3 is kept
    for call in (lambda: dbparallel.load(runs["dit"], step="3"),
                 lambda: dbparallel.export(runs["dit"], tmp_path / "x.safetensors", step="3")):
        with pytest.raises(UserError, match="^step: expected an integer, got str '3'"):
            call()
    with pytest.raises(UserError, match="^step: a training step is >= 0, got -1"):
        dbparallel.load(runs["dit"], step=-1)
    assert not (tmp_path / "x.safetensors").exists()
    assert dbparallel.load(runs["dit"], step=np.int64(3)).steps == [3, 3]


def test_a_block_without_a_snapshot_of_a_run_in_training_says_to_wait(tmp_path: Path,
                                                                      capsys) -> None:
    """The commands it says to run name the run quoted for a shell (``&`` ends a command)."""
    run = _train(tmp_path / "half&1", only=[0])
    train_first = (r"block\(s\) \[1\] have no snapshot yet; train them first \(dbparallel "
                   rf"train \.\.\. run\.dir={re.escape(shlex.quote(run))}\)")
    assert shlex.quote(run) == f"'{run}'"
    with pytest.raises(UserError, match=train_first):
        dbparallel.load(run)
    lease = BlockLease(Storage(run), 1, "another-run", 600)  # a live process trains block 1
    lease.acquire()
    try:
        for call in (lambda: dbparallel.load(run),
                     lambda: dbparallel.export(run, tmp_path / "x.safetensors")):
            with pytest.raises(UserError, match=rf"block\(s\) \[1\] have no snapshot yet; "
                               rf"the run is training \(1 training, 1 done; block\(s\) \[1\] "
                               rf"now\).*train.checkpoint_every=3 .*: wait for it "
                               rf"\(dbparallel status {re.escape(shlex.quote(run))}\)"):
                call()
        assert cli.main(["eval", run]) == 2
        assert "the run is training" in capsys.readouterr().err
    finally:
        lease.release()
    with pytest.raises(UserError, match=train_first):  # the process stopped: train it
        dbparallel.load(run)


def test_exporting_an_export_file_says_it_is_one(runs: dict[str, str], tmp_path: Path,
                                                 capsys) -> None:
    first = tmp_path / "net.safetensors"
    dbparallel.export(runs["dit"], first)
    said = f"{first}: is a file (an export?); export writes one from a run directory"
    with pytest.raises(UserError, match=re.escape(said)):
        dbparallel.export(first, tmp_path / "again.safetensors")
    assert cli.main(["export", str(first), "--out", str(tmp_path / "again.safetensors")]) == 2
    assert said in capsys.readouterr().err
    assert not (tmp_path / "again.safetensors").exists()


def test_the_command_line_names_its_options_where_the_api_names_arguments(tmp_path,
                                                                         capsys) -> None:
    out = str(tmp_path / "x.safetensors")
    assert cli.main(["export", str(tmp_path), "--out", out, "--step", "-1"]) == 2
    assert capsys.readouterr().err.strip() == \
        "dbparallel: error: --step: a training step is >= 0, got -1"
    with pytest.raises(UserError, match="^step: a training step is >= 0"):
        dbparallel.export(str(tmp_path), out, step=-1)  # the API's own name
    # a key=value override that reads like an argument stays as it is
    assert cli.main(["plan", "train.steps=0"]) == 2
    assert "--" not in capsys.readouterr().err


def test_a_source_that_is_no_path_is_named() -> None:
    with pytest.raises(UserError, match="^source: a run directory or an export file .* got "
                                        "NoneType$"):
        dbparallel.load(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("blocks", [[5], ["1"], [True]])
def test_blocks_that_are_not_the_run_s_are_named_as_the_api_names_them(tmp_path,
                                                                       blocks) -> None:
    with pytest.raises(UserError, match=r"^blocks: .* is not a block of this run: blocks are "
                                        r"0\.\.1 \(model\.blocks=2\)$"):
        dbparallel.train(ROOT / "jobs" / "tiny_cpu.yaml", overrides={"run.dir": str(tmp_path)},
                         local=True, blocks=blocks)
    assert not any(tmp_path.iterdir())  # refused before the run directory was written


@pytest.mark.parametrize(("overrides", "says"), [
    (5, "a mapping or a list of key=value strings, got int 5"),
    (["train.steps=3", 3], "key=value strings, got int 3")])
def test_overrides_that_are_no_key_value_strings_are_named(tmp_path, overrides,
                                                           says: str) -> None:
    with pytest.raises(TypeError, match=rf"^overrides: {re.escape(says)}$"):
        dbparallel.train(ROOT / "jobs" / "tiny_cpu.yaml", overrides=overrides, local=True)


def test_blocks_that_are_no_list_are_named(tmp_path) -> None:
    with pytest.raises(UserError, match=r"^blocks: a list of block numbers, e.g. \[0\], got "
                                        r"int 1$"):
        dbparallel.train(ROOT / "jobs" / "tiny_cpu.yaml", overrides={"run.dir": str(tmp_path)},
                         local=True, blocks=1)  # type: ignore[arg-type]
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("blocks", [[], ()])
def test_an_empty_selection_of_blocks_is_refused(tmp_path, blocks) -> None:
    with pytest.raises(UserError, match=r"^blocks: empty; name the blocks to train"):
        dbparallel.train(ROOT / "jobs" / "tiny_cpu.yaml", overrides={"run.dir": str(tmp_path)},
                         local=True, blocks=blocks)
    assert not any(tmp_path.iterdir())


def test_a_run_directory_named_like_an_option_is_named_as_given(tmp_path, monkeypatch,
                                                                capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["generate", "samples", "--prompt", "KING"]) == 2
    assert capsys.readouterr().err.strip() == \
        "dbparallel: error: samples: no such run directory or export file"
    (tmp_path / "out").mkdir()
    assert cli.main(["sample", "out", "--out", str(tmp_path / "x.png")]) == 2
    assert capsys.readouterr().err.strip() == \
        "dbparallel: error: out: not a run directory (no config.yaml)"


def test_a_recipe_given_for_a_run_is_named_as_one(capsys) -> None:
    recipe = str(Path(__file__).resolve().parents[2] / "jobs" / "tiny_cpu.yaml")
    with pytest.raises(UserError, match=r"tiny_cpu.yaml: a recipe; give the run "):
        dbparallel.load(recipe)
    assert cli.main(["eval", recipe]) == 2
    assert "a recipe; give the run directory it trained" in capsys.readouterr().err
