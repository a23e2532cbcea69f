"""train.augment: flips and crops of the training images, drawn for the global batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dbparallel.config import load_config
from dbparallel.core.share import Share
from dbparallel.data.sources import digits_table
from dbparallel.tasks import build_task
from dbparallel.tasks.augment import KINDS, augment, augment_draws, crop_padding, crop_rows
from dbparallel.tasks.base import Batch, Task
from dbparallel.training.block_trainer import BlockTrainer
from dbparallel.training.eval.diagnostics import loss_by_noise

ROOT = Path(__file__).resolve().parents[2]
VIT = ["task=vit", "model.mlp_ratio=2"]
ROWS = 24


def _images(n: int = 64, size: int = 16) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1


def _task(*extra: str) -> Task:
    return build_task(load_config([ROOT / "jobs" / "tiny_cpu.yaml"], list(extra)))


@pytest.fixture(scope="module")
def batch() -> Batch:
    data = _task().decode(digits_table())
    return {k: v[:ROWS] for k, v in data.items()}


def _g(seed: int = 3) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _augment(images: torch.Tensor, kind: str, g: torch.Generator,
             share: Share) -> torch.Tensor:
    """``images``, ``share``'s rows, augmented as the loss does: ``kind``'s draws for the
    global batch, cut to the share."""
    draws = augment_draws(kind, share.total, images.shape[-1], g)
    return augment(images, {k: share.cut(v) for k, v in draws.items()})


# ---------------------------------------------------------------------- the augmentation
def test_none_returns_the_images_and_draws_nothing() -> None:
    images, g = _images(), _g()
    assert augment_draws("none", len(images), 16, g) == {}
    assert _augment(images, "none", g, Share.whole(len(images))) is images
    assert torch.equal(g.get_state(), _g().get_state())


def test_flip_mirrors_about_half_the_images_and_leaves_the_others() -> None:
    images = _images()
    out = _augment(images, "flip", _g(), Share.whole(len(images)))
    mirrored = (out == images.flip(-1)).flatten(1).all(1)  # (N,)
    kept = (out == images).flatten(1).all(1)  # (N,)
    assert (mirrored ^ kept).all()  # each image is one or the other, exactly
    assert 20 <= int(mirrored.sum()) <= 44  # of 64, probability 1/2 each
    assert torch.equal(mirrored, torch.rand(64, generator=_g()) < 0.5)  # the drawn flags


def test_crop_padding_is_an_eighth_at_least_one() -> None:
    assert [crop_padding(s) for s in (4, 8, 16, 28, 32)] == [1, 1, 2, 3, 4]


def test_crop_keeps_shape_and_edge_values() -> None:
    images = _images()
    out = _augment(images, "crop", _g(), Share.whole(len(images)))
    assert out.shape == images.shape
    # edge padding repeats border pixels: nothing outside each image's own range
    lo, hi = images.amin((1, 2, 3), keepdim=True), images.amax((1, 2, 3), keepdim=True)
    assert ((out >= lo) & (out <= hi)).all()
    assert not torch.equal(out, images)
    # each crop is the padded image at its drawn offset
    pad = crop_padding(16)
    offsets = torch.randint(0, 2 * pad + 1, (64, 2), generator=_g())
    assert offsets.unique().tolist() == list(range(2 * pad + 1))
    padded = F.pad(images, (pad,) * 4, mode="replicate")
    for o, p, (r, c) in zip(out, padded, offsets.tolist(), strict=True):
        assert torch.equal(o, p[:, r:r + 16, c:c + 16])


def test_crop_at_the_padding_gives_the_image_back_and_at_zero_shifts_it() -> None:
    images = _images(4, 8)
    pad = crop_padding(8)
    assert torch.equal(crop_rows(images, torch.full((4, 2), pad), pad), images)
    shifted = crop_rows(images, torch.zeros(4, 2, dtype=torch.long), pad)
    assert torch.equal(shifted[..., pad:, pad:], images[..., :-pad, :-pad])
    assert torch.equal(shifted[..., 0, pad:], images[..., 0, :-pad])  # the top edge repeated


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("replicas", [2, 3])
def test_shares_reproduce_the_whole_batch(kind: str, replicas: int) -> None:
    images = _images(10, 8)
    whole = _augment(images, kind, _g(), Share.whole(10))
    shares = [Share.of(r, replicas, 10) for r in range(replicas)]
    parts = [_augment(images[s.start:s.stop], kind, _g(), s) for s in shares]
    assert torch.equal(torch.cat(parts), whole)


# ---------------------------------------------------------------------- the losses
LOSSES = {  # name: config overrides
    "dit": [],
    "vit": VIT,
    "vit_end_to_end": [*VIT, "model.blocks=1", "train.objective=end_to_end"],
}


def _nets(task: Task) -> list[torch.nn.Module]:
    """The task's blocks with random weights: adaLN-zero blocks ignore their input at init."""
    torch.manual_seed(0)
    nets = [task.build_block(b) for b in range(task.partition.blocks)]
    with torch.no_grad():
        for p in (p for net in nets for p in net.parameters()):
            p.normal_(0, 0.2)
    return nets


@pytest.mark.parametrize("name", LOSSES)
def test_augment_none_is_the_loss_without_the_key(batch, name: str) -> None:
    plain, none, flip = (_task(*LOSSES[name], *a)
                         for a in ([], ["train.augment=none"], ["train.augment=flip"]))
    net = _nets(plain)[0]
    loss = plain.loss(net, batch, 0, _g())
    assert torch.equal(none.loss(net, batch, 0, _g()), loss)
    assert not torch.equal(flip.loss(net, batch, 0, _g()), loss)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", LOSSES)
def test_the_loss_sees_the_images_augmented_after_its_other_draws(batch, name, kind) -> None:
    """The loss with ``kind`` is the plain loss of the images augmented with the draws that
    follow the plain loss's own (none for end to end), and the same on a replica's share."""
    task, plain = _task(*LOSSES[name], f"train.augment={kind}"), _task(*LOSSES[name])
    net = _nets(task)[0]
    loss = task.loss(net, batch, 0, _g())
    assert loss.shape == (ROWS,) and torch.isfinite(loss).all()
    g = _g()
    plain.loss(net, batch, 0, g)  # advances g past sigma, eps and dropped labels
    augmented = {**batch, "image": _augment(batch["image"], kind, g, Share.whole(ROWS))}
    torch.testing.assert_close(plain.loss(net, augmented, 0, _g()), loss)
    s = Share.of(1, 3, ROWS)
    rows = {k: v[s.start:s.stop] for k, v in batch.items()}
    torch.testing.assert_close(task.loss(net, rows, 0, _g(), s), loss[s.start:s.stop])


def test_a_block_trains_with_flips_and_crops(batch) -> None:
    trainer = BlockTrainer(load_config([ROOT / "jobs" / "tiny_cpu.yaml"],
                                       ["train.augment=flip_crop"]), 1)
    assert trainer.train_step(batch).finite


# ---------------------------------------------------------------------- evaluation
def test_vit_prediction_and_dit_sampling_never_augment(batch) -> None:
    vit, vit_aug = _task(*VIT), _task(*VIT, "train.augment=flip_crop")
    nets = _nets(vit)
    assert torch.equal(vit.predict(nets, batch["image"], _g()),
                       vit_aug.predict(nets, batch["image"], _g()))
    dit, dit_aug = _task(), _task("train.augment=flip_crop")
    nets = _nets(dit)
    labels = torch.arange(4)
    assert torch.equal(dit.generate(nets, labels, _g(), steps=3),
                       dit_aug.generate(nets, labels, _g(), steps=3))


@pytest.mark.parametrize("name", ["dit", "vit"])
def test_diagnostics_score_the_held_out_images_as_they_are(batch, name: str) -> None:
    cfg = load_config([ROOT / "jobs" / "tiny_cpu.yaml"], LOSSES[name])
    cfg_aug = load_config([ROOT / "jobs" / "tiny_cpu.yaml"],
                          [*LOSSES[name], "train.augment=flip_crop"])
    plain, task = build_task(cfg), build_task(cfg_aug)
    nets = [n.eval() for n in _nets(plain)]
    rows = {k: v[:8] for k, v in batch.items()}
    assert loss_by_noise(cfg_aug, task, nets, rows) == loss_by_noise(cfg, plain, nets, rows)
    assert task.augment == "flip_crop"  # the run's own task is left as it was
