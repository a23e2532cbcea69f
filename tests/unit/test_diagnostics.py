"""diagnostics.json: the composed network's loss per noise level by block, and ViT's chain."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import dbparallel
from dbparallel import cli
from dbparallel.config import load_config
from dbparallel.core.losses import weighted_mse
from dbparallel.runtime.local import run_local
from dbparallel.training.data_pin import run_data
from dbparallel.training.eval.diagnostics import BINS, bins, diagnose, held_out_batch
from dbparallel.training.seeding import generator
from dbparallel.training.storage import Storage

ROOT = Path(__file__).resolve().parents[2]
FAST = ["train.steps=4", "train.checkpoint_every=4", "train.log_every=2", "metrics.port=0",
        "sample.steps=4"]


def _run(tmp_path: Path, *extra: str) -> tuple[dict, Path]:
    cfg = load_config([ROOT / "jobs" / "tiny_cpu.yaml"], [f"run.dir={tmp_path}", *FAST, *extra])
    return run_local(cfg, None, progress=False), tmp_path


def test_a_run_reports_its_loss_per_noise_level_by_block(tmp_path: Path) -> None:
    report, run_dir = _run(tmp_path / "db", "model.blocks=2", "model.depth=2")
    on_disk = json.loads((run_dir / "diagnostics.json").read_text())
    assert report["diagnostics"] == on_disk
    rows = on_disk["loss_by_noise"]
    assert len(rows) == BINS and on_disk["noise"] == "sigma"
    # contiguous bins from sigma_max down to sigma_min, each owned by the block of its range
    assert rows[0]["hi"] == 80.0 and rows[-1]["lo"] == 0.002
    assert all(a["lo"] == pytest.approx(b["hi"]) for a, b in zip(rows, rows[1:], strict=False))
    assert [r["block"] for r in rows] == [0] * (BINS // 2) + [1] * (BINS // 2)
    assert all(r["unweighted_loss"] > 0 and r["loss"] > 0 for r in rows)


def test_the_unweighted_loss_is_the_denoising_error_at_the_tasks_own_sigma(tmp_path) -> None:
    _, run_dir = _run(tmp_path / "db", "model.blocks=2", "model.depth=2")
    net = dbparallel.load(run_dir)
    batch = held_out_batch(net.task, run_data(net.cfg, Storage(str(run_dir))), "cpu",
                           net.cfg.sample.diagnostic_rows)
    found = diagnose(net.cfg, net.task, net.blocks, batch)["loss_by_noise"]
    k = 5  # one bin, recomputed by hand: the DiT loss's own draws in its own order
    lo, hi = bins(net.cfg, net.task).ranges[k]
    g = generator(net.cfg.run.seed, "diagnostics", k)
    y, labels = batch["image"], batch["label"]
    sigma = net.task.noise.sample(len(y), lo, hi, g)
    eps = torch.randn(y.shape, generator=g)
    dropped = torch.rand(len(y), generator=g) < net.cfg.train.label_dropout
    labels = torch.where(dropped, torch.full_like(labels, net.task.null_label), labels)
    with torch.no_grad():
        D = net.task.denoise(net.blocks[found[k]["block"]], y + sigma.view(-1, 1, 1, 1) * eps,
                             sigma, labels)
    mse = weighted_mse(D, y, torch.ones(len(y)))
    assert found[k]["unweighted_loss"] == pytest.approx(float(mse.mean()), rel=1e-5)


def test_vit_reports_the_accuracy_after_each_step_of_its_chain(tmp_path: Path) -> None:
    report, _ = _run(tmp_path / "vit", "task=vit", "model.patch_size=4")
    chain = report["diagnostics"]["chain_accuracy"]
    assert [s["block"] for s in chain] == [0, 1] and chain[0]["sigma"] == 80.0
    assert all(0 <= s["accuracy"] <= 1 for s in chain)
    # the chain again by hand (sample.label_start=zero: z starts at the prior's mean): each
    # step's readout is scored on the same held-out rows, routed to the block owning sigma
    net = dbparallel.load(tmp_path / "vit")
    batch = held_out_batch(net.task, run_data(net.cfg, Storage(str(tmp_path / "vit"))), "cpu",
                           net.cfg.sample.diagnostic_rows)
    images, labels = batch["image"], batch["label"]
    sigmas = [float(s) for s in net.task.inference_sigmas()]
    z = torch.zeros(len(images), net.task.E.shape[1])
    by_hand = []
    with torch.no_grad():
        for k, sigma in enumerate(sigmas):
            block = net.task.partition.owner(sigma)
            _, logits = net.task.denoise(net.blocks[block], images, z,
                                         torch.full((len(images),), sigma))
            by_hand.append(float((logits.argmax(1) == labels).double().mean()))
            if k + 1 < len(sigmas):  # Euler to the next sigma, towards the expected embedding
                D = logits.softmax(1) @ net.task.table(net.blocks[block], "cpu")
                z = z + (sigmas[k + 1] - sigma) * (z - D) / sigma
    assert [s["accuracy"] for s in chain] == pytest.approx(by_hand)
    assert [s["sigma"] for s in chain] == pytest.approx(sigmas)


def test_an_end_to_end_classifier_has_no_noise_levels(tmp_path: Path) -> None:
    report, _ = _run(tmp_path / "e2e", "task=vit", "model.patch_size=4", "model.blocks=1",
                     "train.objective=end_to_end")
    assert report["diagnostics"]["loss_by_noise"] == []


def test_plot_draws_a_run_against_its_baseline(tmp_path: Path, capsys) -> None:
    _run(tmp_path / "db", "model.blocks=2", "model.depth=2")
    _run(tmp_path / "e2e", "model.blocks=1", "model.depth=2", "train.objective=end_to_end")
    out = tmp_path / "c.png"
    assert cli.main(["plot", str(tmp_path / "db"), "--against", str(tmp_path / "e2e"),
                     "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cli.main(["plot", str(tmp_path / "db"), "--against", str(tmp_path / "nope")]) == 2
    assert f"--against {tmp_path / 'nope'}: no such directory" in capsys.readouterr().err
    # the legend calls the baseline end to end, and any other run by its directory
    from dbparallel.training.curves import _against_label
    from dbparallel.training.storage import Storage

    assert _against_label(Storage(str(tmp_path / "e2e"))) == "end to end (--against)"
    assert _against_label(Storage(str(tmp_path / "db"))) == f"{tmp_path / 'db'} (--against)"
    assert cli.main(["plot", str(tmp_path / "db"), "--out", str(tmp_path / "c.jpg")]) == 2
    assert "the curves are a .png file" in capsys.readouterr().err


def test_plot_refuses_a_baseline_of_another_task(tmp_path: Path, capsys) -> None:
    _run(tmp_path / "db", "model.blocks=2", "model.depth=2")
    _run(tmp_path / "vit", "task=vit", "model.patch_size=4", "model.blocks=1",
         "train.objective=end_to_end")
    assert cli.main(["plot", str(tmp_path / "db"), "--against", str(tmp_path / "vit")]) == 2
    err = capsys.readouterr().err
    assert f"a vit run, and {tmp_path / 'db'} is a dit run; compare runs of one task" in err


def test_bins_nest_in_a_log_uniform_partition() -> None:
    from dbparallel.tasks import build_task

    cfg = load_config([ROOT / "jobs" / "tiny_cpu.yaml"], ["model.blocks=3", "model.depth=3",
                                                         "noise.partition=log_uniform"])
    task = build_task(cfg)
    fine = bins(cfg, task)
    assert fine.blocks == 18  # 3 * ceil(16 / 3)
    assert set(task.partition.boundaries) <= set(fine.boundaries)  # no bin straddles two blocks
    owners = [task.partition.owner(math.sqrt(lo * hi)) for lo, hi in fine.ranges]
    assert owners == [0] * 6 + [1] * 6 + [2] * 6
