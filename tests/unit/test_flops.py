"""Model FLOPs of a step, the peaks table, and MFU in report.json and the metrics."""

from __future__ import annotations

import pytest
import torch

from dbparallel.data.sources import digits_table
from dbparallel.runtime.metrics import BlockRecorder, MemorySink, PrometheusSink
from dbparallel.training.block_trainer import BlockTrainer
from dbparallel.training.flops import FlopCount, achieved_tflops
from dbparallel.training.peaks import PEAKS, peak_tflops


def test_linear_layer_counts_forward_and_backward_by_hand() -> None:
    N, d_in, d_out = 8, 16, 4
    layer = torch.nn.Linear(d_in, d_out)
    x = torch.randn(N, d_in, requires_grad=True)
    count = FlopCount()
    with count.counting():
        layer(x).sum().backward()
    # forward x @ W^T, backward dL/dx and dL/dW: three products of 2 * N * d_in * d_out
    assert count.total == 3 * 2 * N * d_in * d_out


def test_cpu_attention_is_counted() -> None:
    q = torch.randn(2, 3, 5, 8, requires_grad=True)  # (N, H, T, D/H)
    count = FlopCount()
    with count.counting():
        torch.nn.functional.scaled_dot_product_attention(q, q, q).sum().backward()
    forward = 2 * (2 * 2 * 3 * 5 * 5 * 8)  # scores q k^T and their product with v
    assert count.total == 3.5 * forward  # torch's count: backward = 2.5 x forward


def test_count_equals_torch_flop_counter_mode(tiny_cfg) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    from dbparallel.training import flops

    trainer = BlockTrainer(tiny_cfg, 0)
    batch = {k: v[:8] for k, v in trainer.task.decode(digits_table()).items()}

    def step() -> None:
        g = torch.Generator().manual_seed(0)
        trainer.task.loss(trainer.model, batch, 0, g).mean().backward()

    count = FlopCount()
    with count.counting():
        step()
    with FlopCounterMode(display=False, custom_mapping=flops.CPU_ATTENTION) as mode:
        step()
    assert count.total == mode.get_total_flops() > 0


def test_block_flops_are_proportional_to_batch(tiny_cfg) -> None:
    data = BlockTrainer(tiny_cfg, 0).task.decode(digits_table())
    flops = {}
    for n in (8, 16):
        trainer = BlockTrainer(tiny_cfg, 0)
        assert trainer.model_flops_per_step is None
        trainer.train_step({k: v[:n] for k, v in data.items()})
        flops[n] = trainer.model_flops_per_step
    assert flops[8] > 0 and flops[16] == 2 * flops[8]


def test_flops_counted_once_and_only_steady_steps_timed(tiny_cfg) -> None:
    trainer = BlockTrainer(tiny_cfg, 1)
    batch = {k: v[:8] for k, v in trainer.task.decode(digits_table()).items()}
    trainer.train_step(batch)
    first = trainer.model_flops_per_step
    assert (trainer.timed_steps, trainer.achieved_tflops) == (0, None)  # the counted step
    for _ in range(2):
        trainer.train_step(batch)
    assert trainer.model_flops_per_step == first and trainer.timed_steps == 2
    assert trainer.achieved_tflops == pytest.approx(2 * first / trainer.timed_s / 1e12)
    assert trainer.peak_tflops is None and trainer.mfu is None  # the CPU has no peak


def test_achieved_tflops_needs_timed_steps() -> None:
    assert achieved_tflops(None, 3, 1.0) is None
    assert achieved_tflops(10**12, 0, 0.0) is None
    assert achieved_tflops(2 * 10**12, 3, 2.0) == 3.0


@pytest.mark.parametrize("name, precision, peak", [
    ("NVIDIA H100 80GB HBM3", "bf16", 989.4),
    ("NVIDIA H100 PCIe", "tf32", 378.0),
    ("NVIDIA H100 NVL", "bf16", 835.5),
    ("NVIDIA H200", "fp32", 66.9),
    ("NVIDIA GH200 480GB", "bf16", 989.4),
    ("NVIDIA A100-SXM4-80GB", "bf16", 312.0),
    ("NVIDIA A100 80GB PCIe", "tf32", 156.0),
    ("NVIDIA L4", "bf16", 121.0),
    ("NVIDIA L40S", "bf16", 362.1),
    ("NVIDIA A10", "fp16", 125.0),
])
def test_peak_by_device_name(name: str, precision: str, peak: float) -> None:
    assert peak_tflops(name, precision) == peak


@pytest.mark.parametrize("name, label", [
    # as torch.cuda.get_device_name() and nvidia-smi give them
    ("NVIDIA H200", "H200 SXM"), ("NVIDIA H200 NVL", "H200 NVL"),
    ("NVIDIA H100 80GB HBM3", "H100 SXM"), ("NVIDIA H100 PCIe", "H100 PCIe"),
    ("NVIDIA H100 NVL", "H100 NVL"), ("NVIDIA GH200 480GB", "GH200"),
    ("NVIDIA GH200 144G HBM3e", "GH200"),
    ("NVIDIA H20", None), ("NVIDIA H800", None), ("NVIDIA H200 MIG 1g.18gb", None),
])
def test_hopper_names_find_their_own_row(name: str, label: str | None) -> None:
    from dbparallel.training.peaks import peak_label

    assert peak_label(name) == label
    assert peak_tflops(name, "bf16") == (None if label is None else
                                         next(p["bf16"] for _, lab, p in PEAKS if lab == label))


def test_unknown_devices_and_mig_slices_have_no_peak() -> None:
    assert peak_tflops("NVIDIA A10G", "bf16") is None
    assert peak_tflops("NVIDIA GeForce RTX 4090", "bf16") is None
    assert peak_tflops("NVIDIA H100 80GB HBM3 MIG 1g.10gb", "bf16") is None
    with pytest.raises(ValueError, match="precision"):
        peak_tflops("NVIDIA H100 80GB HBM3", "fp8")


def test_peaks_table_is_dense_and_ordered() -> None:
    for _, label, peaks in PEAKS:
        # tensor-core bf16 = fp16 = 2 x tf32, above plain fp32 (no sparsity factor slipped in)
        assert peaks["bf16"] == peaks["fp16"], label
        assert peaks["tf32"] == pytest.approx(peaks["bf16"] / 2, rel=0.02), label
        assert peaks["fp32"] < peaks["tf32"], label


def test_recorder_exports_flops_rate_and_mfu() -> None:
    from dbparallel.training.block_trainer import StepStats

    class Trainer:
        memory = None
        heldout_loss = None
        model_flops_per_step = 4 * 10**12
        peak_tflops = 10.0

    sink = MemorySink()
    rec = BlockRecorder("r", "a1", 0, None, sink)
    rec.record(StepStats(1, 0.5, True, 2.0, 8), Trainer())
    tags = {"run": "r", "run_id": "a1", "block": "0"}
    assert sink.get("dbparallel_block_model_flops_per_step", **tags) == 4 * 10**12
    assert sink.get("dbparallel_block_achieved_tflops", **tags) == 2.0
    assert sink.get("dbparallel_block_mfu", **tags) == 0.2
    prometheus = PrometheusSink()  # what a local run serves on metrics.port
    BlockRecorder("r", "a1", 0, None, prometheus).record(StepStats(1, 0.5, True, 2.0, 8),
                                                         Trainer())
    assert prometheus.registry.get_sample_value("ray_dbparallel_block_mfu", tags) == 0.2
    assert prometheus.registry.get_sample_value("ray_dbparallel_block_achieved_tflops", tags) == 2.0
    Trainer.peak_tflops = None  # the CPU: no MFU series at all
    other = MemorySink()
    BlockRecorder("r", "a1", 0, None, other).record(StepStats(1, 0.5, True, 2.0, 8), Trainer())
    assert other.get("dbparallel_block_mfu", **tags) is None


def test_report_rows_have_flops_and_rate(tiny_cfg) -> None:
    from dbparallel.runtime.local import run_local

    tiny_cfg.train.steps = 4
    tiny_cfg.train.checkpoint_every = 4
    tiny_cfg.sample.eval_samples = 10
    report = run_local(tiny_cfg, progress=False)
    for row in report["per_block"]:
        assert row["model_flops_per_step"] > 0
        assert row["achieved_tflops"] > 0  # 3 steady steps after the counted one
        assert row["mfu"] is None  # CPU
    a, b = report["per_block"]
    assert a["model_flops_per_step"] == b["model_flops_per_step"]  # blocks of equal shape
