"""The end-to-end model trained data-parallel through Ray Train's TorchTrainer (the
``data_parallel_e2e`` part of benchmarks/throughput.py): one worker per device, the model
wrapped in DDP, each worker streaming the data in its own order (the rank's).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from ray import cloudpickle

from dbparallel.config import Config, from_dict, to_dict
from dbparallel.data.shards import DataIndex
from dbparallel.training.block_trainer import BlockTrainer
from dbparallel.training.data_order import DataOrder
from dbparallel.training.stream import BlockStream

# Ray Train's workers need not find this module (a script run from outside the repository puts
# only benchmarks/ on their path): its loop goes to them by value, as a script's own does.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _data_parallel_loop(config: dict[str, Any]) -> None:
    """One Ray Train worker: the end-to-end model wrapped in DDP, streaming the data in its
    own order (the rank's), timed steps, report."""
    import ray.train
    import ray.train.torch

    cfg = from_dict(config["cfg"])
    index = DataIndex.from_json(config["index"])
    rank = ray.train.get_context().get_world_rank()
    world = ray.train.get_context().get_world_size()
    device = ray.train.torch.get_device()
    trainer = BlockTrainer(cfg, 0, device)
    trainer.model = ray.train.torch.prepare_model(trainer.model)  # gradients all-reduced
    order = DataOrder([s.rows for s in index.shards("train")], cfg.train.batch_size,
                      cfg.run.seed, rank, cfg.data.window_shards)
    stream = BlockStream(index, "train", order, trainer.task, device)

    def step() -> None:
        trainer.train_step(stream.batch(trainer.step))

    for _ in range(config["warmup"]):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(config["steps"]):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    per_worker = config["steps"] * cfg.train.batch_size / (time.perf_counter() - start)
    stream.close()
    # DDP keeps the workers in lockstep, so rank 0's rate times the number of workers is the
    # aggregate. Ray Train v2 keeps only metrics reported with a checkpoint: rank 0 adds one.
    metrics = {"samples_per_s": per_worker * world, "workers": world}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "throughput.json").write_text(json.dumps(metrics))
        checkpoint = ray.train.Checkpoint.from_directory(tmp) if rank == 0 else None
        ray.train.report(metrics, checkpoint=checkpoint)


def data_parallel_e2e(cfg: Config, index: DataIndex, workers: int, use_gpu: bool, warmup: int,
                      steps: int) -> dict[str, float]:
    """The end-to-end model data-parallel over ``workers`` devices through TorchTrainer
    (each worker streams ``index`` and takes a full batch of train.batch_size)."""
    from ray.train import RunConfig as TrainRunConfig
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    with tempfile.TemporaryDirectory() as storage:
        trainer = TorchTrainer(
            _data_parallel_loop,
            train_loop_config={"cfg": to_dict(cfg), "index": index.to_json(),
                               "warmup": warmup, "steps": steps},
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                         resources_per_worker={"CPU": 1}),
            run_config=TrainRunConfig(storage_path=storage, name="data-parallel-e2e"))
        metrics = trainer.fit().metrics
    return {"samples_per_s": metrics["samples_per_s"], "workers": metrics["workers"]}
