"""The ViT classification task: label embedding, per-sample loss, routed inference, accuracy."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from dbparallel.config import load_config
from dbparallel.core.precond import edm_weight
from dbparallel.data.sources import digits_table
from dbparallel.data.tables import image_table
from dbparallel.tasks import build_task
from dbparallel.tasks.classification import Classification
from dbparallel.training.block_trainer import BlockTrainer
from dbparallel.training.eval import classification as eval_classification

TINY = ["task=vit", "model.depth=6", "model.hidden=32", "model.heads=2", "model.mlp_ratio=2"]


def _task(blocks: int = 3, *extra: str) -> Classification:
    task = build_task(load_config([], [*TINY, f"model.blocks={blocks}", *extra]))
    assert isinstance(task, Classification)
    return task


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    data = _task().decode(digits_table())
    return {k: v[:6] for k, v in data.items()}


def test_label_embedding_is_unit_and_shared_by_every_block() -> None:
    cfg = load_config([], [*TINY, "model.blocks=3", "run.seed=7"])
    E = BlockTrainer(cfg, 0).task.E
    assert E.shape == (10, 32)
    torch.testing.assert_close(E.norm(dim=1), torch.ones(10))
    assert torch.equal(E, BlockTrainer(cfg, 2).task.E)
    assert not torch.equal(E, _task(3, "run.seed=8").E)  # a function of the seed
    assert not any(p is E for p in BlockTrainer(cfg, 1).model.parameters())  # frozen


def test_label_embedding_is_identical_in_another_process(tmp_path) -> None:
    out = tmp_path / "E.pt"
    code = ("import torch, sys\n"
            "from dbparallel.config import load_config\n"
            "from dbparallel.tasks import build_task\n"
            f"cfg = load_config([], {[*TINY, 'model.blocks=3', 'run.seed=7']!r})\n"
            "torch.save(build_task(cfg).E, sys.argv[1])\n")
    subprocess.run([sys.executable, "-c", code, str(out)], check=True)
    assert torch.equal(torch.load(out), _task(3, "run.seed=7").E)


def test_loss_is_weighted_cross_entropy_per_sample(batch) -> None:
    task = _task()
    net = task.build_block(1)
    torch.nn.init.normal_(net.head.linear.weight, std=0.5)  # non-trivial logits
    loss = task.loss(net, batch, 1, torch.Generator().manual_seed(3))
    assert loss.shape == (6,)
    # replay the same draws: sigma, then eps
    g = torch.Generator().manual_seed(3)
    lo, hi = task.partition.ranges[1]
    sigma = task.noise.sample(6, lo, hi, g)
    assert ((sigma >= lo) & (sigma <= hi)).all()
    eps = torch.randn(6, 32, generator=g)
    _, logits = task.denoise(net, batch["image"], task.E[batch["label"]] + sigma[:, None] * eps,
                             sigma)
    ce = F.cross_entropy(logits, batch["label"], reduction="none")
    torch.testing.assert_close(loss, edm_weight(sigma, 0.5) * ce)


def test_end_to_end_is_the_plain_vit_with_cross_entropy(batch) -> None:
    task = _task(1, "train.objective=end_to_end")
    net = task.build_block(0)
    assert len(net.layers) == 6 and not hasattr(net, "sigma_embed")
    torch.nn.init.normal_(net.head.linear.weight, std=0.5)
    loss = task.loss(net, batch, 0, torch.Generator().manual_seed(0))
    F_x, c = net(batch["image"])
    expected = F.cross_entropy(net.classify(F_x, c), batch["label"], reduction="none")
    torch.testing.assert_close(loss, expected)
    assert task.predict([net], batch["image"], torch.Generator()).shape == (6, 10)


@pytest.mark.parametrize(("blocks", "sigmas"), [
    (2, [80.0, 0.002]), (3, [80.0, 0.3012, 0.002]), (4, [80.0, 0.505, 0.1796, 0.002]),
])
def test_inference_runs_each_block_once_in_order(batch, blocks, sigmas) -> None:
    task = _task(blocks, f"model.depth={blocks}")
    nets = [task.build_block(b).eval() for b in range(blocks)]
    calls: list[tuple[int, float]] = []
    for b, net in enumerate(nets):
        net.register_forward_hook(
            lambda _m, args, _out, b=b: calls.append((b, float(args[2][0].mul(4).exp()))))
    logits = task.predict(nets, batch["image"], torch.Generator().manual_seed(0))
    assert logits.shape == (6, 10)
    assert [b for b, _ in calls] == list(range(blocks))
    assert [s for _, s in calls] == pytest.approx(sigmas, rel=1e-3)  # ends at sigma_min


def test_inference_uses_the_expected_embedding(batch) -> None:
    """A block that is certain of class k returns D = E[k]; after the step from sigma_max the
    state is (sigma'/sigma) z + (1 - sigma'/sigma) E[k]."""
    task = _task(2, "model.depth=2")
    seen: list[torch.Tensor] = []

    class Certain(torch.nn.Module):
        def forward(self, images, z_in, c_noise):
            seen.append(z_in.clone())
            return torch.zeros(len(images), 32), torch.zeros(len(images), 32)

        def classify(self, D, c):
            return torch.full((len(D), 10), -1e4).index_fill(1, torch.tensor([4]), 1e4)

    logits = task.predict([Certain(), Certain()], batch["image"], torch.Generator())
    assert logits.argmax(1).tolist() == [4] * 6
    s0, s1 = task.inference_sigmas().tolist()
    z1 = seen[1] * (s1**2 + 0.25) ** 0.5  # undo c_in
    z0 = seen[0] * (s0**2 + 0.25) ** 0.5
    torch.testing.assert_close(z1, (s1 / s0) * z0 + (1 - s1 / s0) * task.E[4].expand(6, -1),
                               rtol=1e-4, atol=1e-4)


def _split_table() -> pa.Table:
    rng = np.random.default_rng(0)
    images = rng.random((8, 1, 8, 8), dtype=np.float32)
    table = image_table(images, np.array([0, 1, 2, 3, 0, 1, 2, 3]))
    return table.append_column("split", pa.array(["train"] * 4 + ["test"] * 4))


def test_accuracy_is_scored_on_the_test_rows(tmp_path) -> None:
    from dbparallel.data.parquet_index import parquet_index

    task = _task(2, "model.depth=2", "data.num_classes=4")
    pq.write_table(_split_table(), tmp_path / "data.parquet")
    index = parquet_index(str(tmp_path / "data.parquet"))
    guesses = torch.tensor([0, 1, 3, 3])  # 3 of the 4 test rows right

    def predict(nets, images, generator):
        assert len(images) == 4
        return F.one_hot(guesses, 4).float()

    task.predict = predict  # type: ignore[method-assign]
    metrics = eval_classification.evaluate(task.cfg, task, [], index)
    assert metrics == {"accuracy": 0.75, "eval_rows": 4, "eval_on_test": 1}
    assert [type(v) for v in metrics.values()] == [float, int, int]  # counts written whole
    matrix = eval_classification.confusion(guesses, torch.tensor([0, 1, 2, 3]), 4)
    assert matrix.tolist() == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 0, 1]]
    assert index.num_rows("train") == 4  # trains on the train rows only


def test_plan_sizes_vit_blocks() -> None:
    from dbparallel.training.plan import plan

    result = plan(load_config([], [*TINY, "model.blocks=3"]))
    assert result["blocks"] == 3 and result["layers_per_block"] == 2
    assert len(set(result["params_per_block"])) == 1
    assert all(m > 0 for m in result["estimated_memory_bytes"])
