"""The run directory's history: metrics.jsonl per block, assembly.jsonl, curves.png, and
`dbparallel plot`."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from dbparallel.cli import main
from dbparallel.config import DataConfig, load_config
from dbparallel.data.sources import open_data
from dbparallel.errors import RunDirError
from dbparallel.runtime.backend import Event
from dbparallel.runtime.controller import Controller
from dbparallel.runtime.local import run_local
from dbparallel.training.curves import PANEL_COLUMNS, assembly_panels, plot_curves
from dbparallel.training.history import (
    ASSEMBLY_FILE,
    AssemblyLog,
    append_assembly,
    metrics_file,
    read_assemblies,
    read_lines,
)
from dbparallel.training.lease import LeaseLost
from dbparallel.training.loop import BlockRun
from dbparallel.training.run_dir import open_run
from dbparallel.training.seeding import generator
from dbparallel.training.storage import Storage

TINY = Path(__file__).resolve().parents[2] / "jobs" / "tiny_cpu.yaml"
PNG = b"\x89PNG\r\n\x1a\n"


def _cfg(run_dir: Path | str, *overrides: str):
    return load_config([TINY], [f"run.dir={run_dir}", *overrides])


def _lines(storage: Storage, block: int) -> list[dict]:
    return read_lines(storage, metrics_file(block))


def _same(record: dict) -> tuple:
    """What a replayed step reproduces exactly (wall time and rates differ)."""
    return (record["step"], record["loss"], record["lr"], record["nonfinite_steps"],
            record["noise_min"], record["noise_median"], record["noise_max"])


def test_a_local_run_writes_each_blocks_history_its_assembly_and_curves(tmp_path) -> None:
    cfg = _cfg(tmp_path / "run", "train.steps=10", "train.warmup_steps=8", "run.curves=true")
    report = run_local(cfg, progress=False)
    storage = Storage(cfg.run_dir)
    for b, row in enumerate(report["per_block"]):
        lines = _lines(storage, b)
        assert [r["step"] for r in lines] == [4, 8, 10]  # every log_every, and the last step
        assert [r["lr"] for r in lines] == [5e-4, 1e-3, 1e-3]  # warm-up: lr * 4/8 at step 4
        assert lines[-1]["loss"] == row["final_loss"]  # mean of the last log_every steps
        assert [lines[-1]["sigma_lo"], lines[-1]["sigma_hi"]] == report["partition"][b]
        assert all(r["samples_per_s"] > 0 and r["nonfinite_steps"] == 0 for r in lines)
    (line,) = read_assemblies(storage)
    assert line["step"] == 10 and line["wall_s"] >= 0
    assert line["sample_accuracy"] == report["assembly"]["sample_accuracy"]
    assert "block_steps_min" not in line
    assert (tmp_path / "run" / "curves.png").read_bytes()[:8] == PNG


def test_a_run_draws_no_curves_where_run_curves_is_false(tmp_path) -> None:
    # jobs/tiny_cpu.yaml draws none; the same history is drawn by `dbparallel plot`
    cfg = _cfg(tmp_path / "run", "train.steps=4")
    assert cfg.run.curves is False
    run_local(cfg, progress=False)
    assert not (tmp_path / "run" / "curves.png").exists()
    assert read_assemblies(Storage(cfg.run_dir))
    assert main(["plot", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "curves.png").read_bytes()[:8] == PNG


def test_a_resume_with_more_steps_continues_the_history(tmp_path) -> None:
    resumed = _cfg(tmp_path / "resumed", "train.steps=8")
    run_local(resumed, progress=False, only_blocks=[0])
    report = run_local(_cfg(tmp_path / "resumed", "train.steps=12"), progress=False,
                       only_blocks=[0])
    assert report["per_block"][0]["resumed_from"] == 8  # continued, not retrained
    straight = _cfg(tmp_path / "straight", "train.steps=12")
    run_local(straight, progress=False, only_blocks=[0])
    lines = _lines(Storage(resumed.run_dir), 0)
    assert [r["step"] for r in lines] == [4, 8, 12]
    assert [_same(r) for r in lines] == [_same(r) for r in _lines(Storage(straight.run_dir), 0)]


def test_a_line_being_appended_is_left_out_unsaid_and_a_broken_one_is_named(
        tmp_path, caplog) -> None:
    """A reader (status, plot) of a local run that trains meets the line being appended as
    it reads: it is not a record yet, and nothing is wrong. A line that does not parse and
    has its newline is named."""
    storage = Storage(str(tmp_path))
    storage.write_bytes("m.jsonl", b'{"step": 4}\n{"step": 8}\n{"step": 12, "lo')
    with caplog.at_level("WARNING"):
        assert read_lines(storage, "m.jsonl") == [{"step": 4}, {"step": 8}]
    assert caplog.text == ""
    storage.write_bytes("m.jsonl", b'{"step": 4}\n{"ste\n{"step": 12}\n')
    with caplog.at_level("WARNING"):
        assert read_lines(storage, "m.jsonl") == [{"step": 4}, {"step": 12}]
    assert "m.jsonl line 2 is not JSON" in caplog.text


@pytest.mark.parametrize("where", ["local", "object store"])
def test_a_killed_block_replays_its_lines_once_and_its_zombie_writes_none(
        tiny_cfg, where) -> None:
    # mock:// is pyarrow's in-memory file system: the object-store path (no append)
    storage = Storage(tiny_cfg.run_dir if where == "local" else "mock:///run")
    assert storage.is_local == (where == "local")
    index = open_data(DataConfig())
    first = BlockRun(tiny_cfg, 0, index, storage, session="run")
    first.train_until(10)  # lines at 4 and 8, checkpoint at 6; then the process is lost
    before = _lines(storage, 0)
    # an object store's lines are uploaded with checkpoints (history.UPLOAD_EVERY_S): the
    # line of step 8, after the checkpoint of step 6, is lost with the process, and replayed
    assert [r["step"] for r in before] == ([4, 8] if where == "local" else [4])
    torn = storage.read_bytes(metrics_file(0)) + b'{"step": 9, "lo'  # a write cut short
    storage.write_bytes(metrics_file(0), torn)
    second = BlockRun(tiny_cfg, 0, index, storage, session="run")  # e.g. Ray's restart
    assert second.resumed_from == 6
    assert [r["step"] for r in _lines(storage, 0)] == [4]  # it replays steps 7..8
    with pytest.raises(LeaseLost):
        first.train_until(12)  # the fenced-off process, still running
    assert [r["step"] for r in _lines(storage, 0)] == [4]
    second.train_until(12)
    second.close()
    first.stream.close()
    after = _lines(storage, 0)
    assert [r["step"] for r in after] == [4, 8, 12]
    assert [_same(r) for r in after[:len(before)]] == [_same(r) for r in before]


@pytest.mark.parametrize("every_s", [30.0, 0.0])
def test_an_object_store_history_is_uploaded_with_checkpoints_not_every_line(
        tiny_cfg, monkeypatch, every_s) -> None:
    """A line every step, a checkpoint every 3 of 6: an object store's metrics.jsonl, which
    is rewritten whole, is uploaded at the checkpoints (2 uploads, not 6), with every line;
    once history.UPLOAD_EVERY_S has passed, at the next line."""
    from dbparallel.training import history

    monkeypatch.setattr(history, "UPLOAD_EVERY_S", every_s)
    uploads: list[int] = []

    class Counted(Storage):
        def write_bytes(self, rel: str, data: bytes) -> None:
            if rel == metrics_file(0):
                uploads.append(data.count(b"\n"))  # the lines it holds
            super().write_bytes(rel, data)

    cfg = load_config([TINY], [f"run.dir={tiny_cfg.run_dir}", "train.steps=6",
                               "train.log_every=1", "train.checkpoint_every=3"])
    storage = Counted("mock:///run")  # (pyarrow's in-memory file system: one per instance)
    run = BlockRun(cfg, 0, open_data(DataConfig()), storage, session="run")
    run.train_until(6)
    run.close()
    assert uploads == ([3, 6] if every_s else [1, 2, 3, 4, 5, 6])
    assert [r["step"] for r in _lines(storage, 0)] == [1, 2, 3, 4, 5, 6]


class _Blocks:
    """Two blocks that reach whatever step they are asked for; every assembly succeeds."""

    def __init__(self, steps: int):
        self.steps, self.queue = steps, []

    def submit_train(self, block: int, until: int) -> None:
        self.queue.append(Event("train", block, {"step": until, "done": until >= self.steps,
                                                 "loss": 1.0, "restarts": 0}))

    def submit_assemble(self, write_samples: bool) -> None:
        self.queue.append(Event("assemble", None, {"sample_accuracy": 0.5}))

    def start_block(self, block: int, slot: int) -> None:
        pass

    def finish_block(self, block: int) -> None:
        pass

    def poll(self, timeout_s: float) -> list[Event]:
        events, self.queue = self.queue, []
        return events

    def summaries(self) -> list[dict]:
        return []

    def restart_block(self, block: int) -> bool:
        raise AssertionError("no block stalls here")


def test_assemblies_during_training_and_the_final_one_are_lines(tmp_path) -> None:
    cfg = load_config([], ["model.blocks=2", "model.depth=2", "train.steps=10",
                           "train.log_every=4", "train.assemble_every=4"])
    storage = Storage(str(tmp_path))
    Controller(cfg, _Blocks(10), on_assembled=AssemblyLog(storage, 0.0).append).run()
    lines = read_assemblies(storage)
    assert [r["step"] for r in lines] == [4, 8, 10]  # at steps 4 and 8, then the final one
    assert all(r["sample_accuracy"] == 0.5 and r["wall_s"] >= 0 for r in lines)


def test_an_assembly_line_replaces_those_of_its_step_and_later(tmp_path) -> None:
    storage = Storage(str(tmp_path))
    for step, value in [(4, 0.1), (8, 0.2), (6, 0.3)]:  # a resumed run assembles step 6
        append_assembly(storage, step, {"bpc": value, "block_steps_min": step}, 1.0)
    assert read_assemblies(storage) == [{"step": 4, "bpc": 0.1, "wall_s": 1.0},
                                        {"step": 6, "bpc": 0.3, "wall_s": 1.0}]


def test_an_assembly_without_a_kid_std_writes_it_as_null(tmp_path, capsys) -> None:
    """kid_std is None with one KID subset: null in assembly.jsonl and report.json, left out
    of the printed summary."""
    from dbparallel.cli import _print_summary

    storage = Storage(str(tmp_path))
    metrics = {"fid": 120.5, "kid": 0.02, "kid_std": None, "fid_samples": 100}
    append_assembly(storage, 4, metrics, 1.0)
    assert read_assemblies(storage) == [{"step": 4, **metrics, "wall_s": 1.0}]
    _print_summary(_cfg(tmp_path), {"per_block": [], "assembly": metrics, "wall_time_s": 2.0})
    assert "assembly: fid=120.5, kid=0.02, fid_samples=100\n" in capsys.readouterr().out
    looped = {"bpc": 18.34, "train_memory_bytes_bptt": 23962436, "eval_rows": 10000}
    _print_summary(_cfg(tmp_path), {"per_block": [], "assembly": looped, "wall_time_s": 2.0})
    # bytes as `dbparallel status` shows them (was train_memory_bytes_bptt=23,962,436)
    assert ("assembly: bpc=18.34, train_memory_bytes_bptt=22.9 MiB, eval_rows=10,000\n"
            in capsys.readouterr().out)


def _history(storage: Storage, assemblies: bool) -> None:
    for b, (lo, hi) in enumerate([(0.4, 80.0), (0.002, 0.5)]):
        records = [{"step": s, "loss": 3.0 / s / (b + 1) ** 3, "sigma_lo": lo, "sigma_hi": hi}
                   for s in (4, 8, 12)]
        storage.write_text(metrics_file(b), "".join(json.dumps(r) + "\n" for r in records))
    if assemblies:
        append_assembly(storage, 8, {"sample_accuracy": 0.2, "fd_indomain": 40.0}, 3.0)
        append_assembly(storage, 12, {"sample_accuracy": 0.4, "fd_indomain": 30.0}, 5.0)


def test_plot_curves_draws_a_png_with_an_assembly_panel_when_there_are_points(
        tmp_path) -> None:
    storage = Storage(str(tmp_path))
    with pytest.raises(RunDirError, match="no training history yet"):
        plot_curves(storage)
    _history(storage, assemblies=False)
    losses_only = plot_curves(storage)
    _history(storage, assemblies=True)
    both = plot_curves(storage)
    assert losses_only[:8] == PNG and both[:8] == PNG
    width, height = Image.open(io.BytesIO(losses_only)).size
    assert Image.open(io.BytesIO(both)).size[1] > height  # a second row of panels


def test_a_blocks_legend_names_its_noise_range_in_the_runs_noise(tmp_path) -> None:
    """mdm's blocks own ranges of the masking time t, the other tasks' of sigma."""
    from dbparallel.training.curves import block_label, noise_name

    record = {"step": 25, "loss": 3.9, "sigma_lo": 0.45, "sigma_hi": 1.0}
    for task, noise in (("mdm", "t"), ("ar", "sigma"), ("dit", "sigma")):
        storage = Storage(str(tmp_path / task))
        storage.write_text("config.yaml", f"task: {task}\n")
        assert noise_name(storage) == noise
        assert block_label(0, record, noise) == f"block 0  ({noise} 0.45 to 1)"
    assert noise_name(Storage(str(tmp_path / "none"))) == "sigma"  # no config.yaml
    assert block_label(1, {"step": 25, "loss": 3.9}, "t") == "block 1"


def test_assembly_panels_leave_out_what_training_does_not_change() -> None:
    """The looped task's line: its memory measurements and whether the test split was scored
    get no panel; the data's perplexity and entropy are drawn in the network's panels."""
    line = {"step": 4, "bpc": 7.0, "bpc_sigma_max": 7.0, "eval_on_test": 1.0, "gen_ppl": 128.0,
            "sample_entropy": 2.9, "data_ppl": 127.9, "data_entropy": 2.7,
            "train_memory_bytes_bptt": 6.5e7, "train_activation_bytes_bptt": 6.2e7,
            "wall_s": 9.1, "fd_indomain": float("nan")}
    assert assembly_panels([line]) == [("bpc", None), ("bpc_sigma_max", None),
                                       ("gen_ppl", "data_ppl"),
                                       ("sample_entropy", "data_entropy")]
    without_data = {k: v for k, v in line.items() if not k.startswith("data_")}
    assert ("gen_ppl", None) in assembly_panels([without_data])


def test_assembly_panels_leave_out_counts_and_draw_the_classifiers_own_accuracy() -> None:
    """DiT with FID, ViT and BPE text lines: the rows and samples scored and the characters
    per token are the same at every assembly; the classifier's accuracy on real images is the
    data's reference for its accuracy on samples."""
    dit = {"step": 4, "sample_accuracy": 0.5, "fd_indomain": 3.0, "classifier_accuracy": 0.99,
           "fid": 80.0, "kid": 0.1, "kid_std": None, "fid_samples": 64, "wall_s": 2.0}
    assert assembly_panels([dit]) == [("fd_indomain", None), ("fid", None), ("kid", None),
                                      ("sample_accuracy", "classifier_accuracy")]
    vit = {"step": 4, "accuracy": 0.8, "eval_rows": 100, "eval_on_test": 1}
    assert assembly_panels([vit]) == [("accuracy", None)]
    bpe = {"step": 4, "bpc": 2.1, "bpt": 5.0, "chars_per_token": 2.4, "eval_on_test": 1}
    assert assembly_panels([bpe]) == [("bpc", None), ("bpt", None)]


def test_more_assembly_panels_than_a_row_holds_wrap_to_a_second_row(tmp_path) -> None:
    storage = Storage(str(tmp_path))
    _history(storage, assemblies=False)
    metrics = {f"metric_{i}": float(i) for i in range(PANEL_COLUMNS)}
    append_assembly(storage, 8, metrics, 3.0)
    one_row = Image.open(io.BytesIO(plot_curves(storage))).size
    append_assembly(storage, 12, {**metrics, "one_more": 1.0}, 5.0)
    two_rows = Image.open(io.BytesIO(plot_curves(storage))).size
    assert two_rows[0] == one_row[0] and two_rows[1] > one_row[1]


def test_dbparallel_plot(tmp_path, capsys) -> None:
    assert main(["plot", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
    storage = open_run(_cfg(tmp_path / "run"))
    run_dir = str(tmp_path / "run")
    assert main(["plot", run_dir]) == 2
    assert "no training history yet" in capsys.readouterr().err
    _history(storage, assemblies=True)
    assert main(["plot", run_dir]) == 0
    assert (tmp_path / "run" / "curves.png").read_bytes()[:8] == PNG
    out = tmp_path / "elsewhere.png"
    assert main(["plot", run_dir, "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == PNG
    assert main(["plot", run_dir, "--out", str(tmp_path / "missing" / "x.png")]) == 2
    assert storage.exists(ASSEMBLY_FILE)


def test_the_noise_statistics_are_the_levels_the_loss_drew(tmp_path) -> None:
    """A line's noise_* are those of the sigmas the task's loss drew at its steps."""
    from dbparallel.training.block_trainer import BlockTrainer
    from dbparallel.training.noise_stats import noise_stats

    cfg = _cfg(tmp_path / "run", "train.steps=4", "train.log_every=2")
    trainer = BlockTrainer(cfg, 1)
    drawn = []
    original = trainer.task.noise

    class Spy:  # the noise the loss sees, recording what it draws
        def __getattr__(self, name):
            return getattr(original, name)

        def sample(self, *args, **kwargs):
            drawn.append(original.sample(*args, **kwargs))
            return drawn[-1]

    batch = trainer.task.example_batch(cfg.train.batch_size, "cpu")
    trainer.task.noise = Spy()
    for _ in range(2):
        trainer.train_step(batch)
    trainer.task.noise = original
    seen = torch.cat(drawn)
    lo, hi = trainer.sigma_range
    assert lo <= float(seen.min()) and float(seen.max()) <= hi
    assert noise_stats(cfg, trainer.task, 1, range(0, 2)) == {
        "noise_min": float(seen.min()), "noise_median": float(seen.median()),
        "noise_max": float(seen.max())}


def test_the_noise_statistics_are_read_from_the_device_once(tmp_path, monkeypatch) -> None:
    from dbparallel.training.block_trainer import BlockTrainer
    from dbparallel.training.noise_stats import noise_stats

    cfg = _cfg(tmp_path / "run", "train.steps=4", "train.log_every=2")
    task = BlockTrainer(cfg, 1).task
    expected = noise_stats(cfg, task, 1, range(0, 2))
    reads = []
    for name in ("__float__", "item", "tolist"):  # each a wait for a CUDA block's device
        read = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name,
                            lambda self, *a, read=read, name=name: reads.append(name)
                            or read(self, *a))
    assert noise_stats(cfg, task, 1, range(0, 2)) == expected
    assert len(reads) == 1


def _held(record: dict) -> tuple:
    return record["step"], record.get("heldout_loss")


def test_heldout_loss_is_on_its_lines_and_a_resumed_block_writes_the_same(tmp_path) -> None:
    index = open_data(DataConfig())
    over = ("train.heldout_every=3", "train.heldout_rows=100")
    straight = BlockRun(_cfg(tmp_path / "straight", *over), 1, index,
                        Storage(str(tmp_path / "straight")))
    straight.train_until(12)
    lines = _lines(Storage(str(tmp_path / "straight")), 1)
    # every log_every (4), every heldout_every (3) and the last step; held-out on the latter
    assert [_held(r)[0] for r in lines] == [3, 4, 6, 8, 9, 12]
    assert [r["step"] for r in lines if "heldout_loss" in r] == [3, 6, 9, 12]
    assert all(r["heldout_loss"] > 0 for r in lines if "heldout_loss" in r)
    assert straight.summary()["heldout_loss"] == lines[-1]["heldout_loss"]
    # it is the EMA weights' loss on those rows with fixed noise: once more, whole, the same
    t = straight.trainer
    batch = straight._heldout_batch()
    assert len(batch["label"]) == 100
    whole = t.task.loss(t.ema, batch, 1, generator(0, "heldout", 1)).mean()
    assert float(whole) == pytest.approx(lines[-1]["heldout_loss"], rel=1e-5)
    # and not the training weights' loss
    with torch.no_grad():
        trained = float(t.task.loss(t.model, batch, 1, generator(0, "heldout", 1)).mean())
    assert trained != pytest.approx(lines[-1]["heldout_loss"], rel=1e-5)
    # a block killed after step 8 resumes from its checkpoint at 6 and writes the same values
    storage = Storage(str(tmp_path / "resumed"))
    BlockRun(_cfg(tmp_path / "resumed", *over), 1, index, storage, session="s").train_until(8)
    second = BlockRun(_cfg(tmp_path / "resumed", *over), 1, index, storage, session="s")
    assert second.resumed_from == 6
    second.train_until(12)
    second.close()
    assert [_held(r) for r in _lines(storage, 1)] == [_held(r) for r in lines]


def test_heldout_loss_off_and_its_split(tmp_path) -> None:
    from dbparallel.data.shards import DataIndex, Shard

    cfg = _cfg(tmp_path / "run", "train.heldout_every=0", "train.steps=4")
    run = BlockRun(cfg, 0, open_data(DataConfig()), Storage(cfg.run_dir))
    run.train_until(4)
    assert all("heldout_loss" not in r for r in _lines(Storage(cfg.run_dir), 0))
    assert run.summary()["heldout_loss"] is None and run._heldout is None  # nothing read
    assert run.summary()["heldout_split"] is None

    def index(*splits: str) -> DataIndex:
        return DataIndex("images", "x", {s: (Shard("parquet", f"{s}.parquet", 10),)
                                         for s in splits})

    assert index("train", "validation", "test").heldout_split == "validation"
    assert index("train", "test").heldout_split == "test"
    assert index("train").heldout_split == "train"


def test_a_nonfinite_heldout_loss_is_written_as_null(tmp_path) -> None:
    cfg = _cfg(tmp_path / "run", "train.steps=2", "train.heldout_rows=16")
    storage = Storage(cfg.run_dir)
    run = BlockRun(cfg, 0, open_data(DataConfig()), storage)
    run.train_until(1)
    with torch.no_grad():
        for p in run.trainer.ema.parameters():
            p.fill_(float("nan"))
    run.train_until(2)  # its last step: held-out loss of NaN weights
    text = storage.read_text(metrics_file(0))
    assert "NaN" not in text and json.loads(text.splitlines()[-1])["heldout_loss"] is None
    assert run.summary()["heldout_loss"] is None
    json.dumps(run.summary(), allow_nan=False)


def test_heldout_loss_never_augments(tmp_path) -> None:
    index = open_data(DataConfig())
    runs = {}
    for kind in ("none", "flip_crop"):
        cfg = _cfg(tmp_path / kind, "train.steps=4", "train.heldout_rows=64",
                   f"train.augment={kind}")
        runs[kind] = BlockRun(cfg, 0, index, Storage(cfg.run_dir))
    # the same weights (the same seed, untrained)
    values = [r.trainer.heldout(r._heldout_batch()) for r in runs.values()]
    assert values[0] == values[1]
    # while the training loss of the same weights and draws does see the flips and crops
    t = runs["flip_crop"].trainer
    batch = runs["flip_crop"]._heldout_batch()
    with torch.no_grad():
        trained = [float(task.loss(t.ema, batch, 0, generator(0, "heldout", 0)).mean())
                   for task in (t.task, runs["none"].trainer.task)]
    assert trained[0] != trained[1]


def test_report_json_is_strict_json_with_null_for_a_number_that_is_not_finite(
        tmp_path) -> None:
    """A block that took no finite step has a NaN final loss: report.json says null, which
    jq and JavaScript read (they refuse NaN), and the report still reads as written."""
    from dbparallel.training.report import REPORT_FILE, read_report, write_report

    storage = Storage(str(tmp_path))
    write_report(storage, {"per_block": [{"final_loss": float("nan"), "steps": 4},
                                         {"final_loss": 0.5, "losses": (1.0, float("-inf"))}],
                           "assembly": {"bpc": float("inf"), "eval_on_test": 1}})

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    text = (tmp_path / REPORT_FILE).read_text()
    assert json.loads(text, parse_constant=refuse) == {
        "per_block": [{"final_loss": None, "steps": 4},
                      {"final_loss": 0.5, "losses": [1.0, None]}],
        "assembly": {"bpc": None, "eval_on_test": 1}}
    assert read_report(storage, now=0.0)[0]


def test_an_assembly_metric_that_is_not_finite_is_null_in_assembly_jsonl(tmp_path) -> None:
    storage = Storage(str(tmp_path))
    append_assembly(storage, 4, {"bpc": float("nan"), "eval_rows": 10, "kid_std": None,
                                 "gen_ppl": float("inf"), "sample_accuracy": 0.5}, 1.0)

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    (line,) = (tmp_path / ASSEMBLY_FILE).read_text().splitlines()
    assert json.loads(line, parse_constant=refuse) == {
        "step": 4, "bpc": None, "eval_rows": 10, "kid_std": None, "gen_ppl": None,
        "sample_accuracy": 0.5, "wall_s": 1.0}
    assert read_assemblies(storage)[0]["bpc"] is None
