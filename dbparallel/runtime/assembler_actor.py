"""The assembly actor: composes the latest block snapshots and evaluates the network."""

from __future__ import annotations

import warnings

import ray
import torch

from dbparallel.config import Config
from dbparallel.data.own_code import OwnCode, unpack
from dbparallel.runtime import faults
from dbparallel.runtime.metrics import AssemblyRecorder
from dbparallel.training.assemble import assemble
from dbparallel.training.data_pin import run_data
from dbparallel.training.device import assembly_device
from dbparallel.training.precision import set_matmul_precision
from dbparallel.training.storage import Storage

RESTARTS = "assembler_restarts.json"


class AssemblerActor:
    """Loads every block's snapshot, samples with the routed sampler, scores the samples on
    the evaluation rows it streams from the run's pinned data; ``run_id`` (the run
    directory's) labels its metrics; ``code``: sample.decoder's own module, sent from the
    driver (data/own_code.py), importable here first."""

    def __init__(self, cfg: Config, run_id: str, code: OwnCode | None = None):
        if code is not None:
            unpack(code)
        self.cfg = cfg
        self.device = assembly_device(cfg)
        torch.set_num_threads(cfg.runtime.torch_threads)
        self.storage = Storage(cfg.run_dir)
        self.index = run_data(cfg, self.storage)
        set_matmul_precision(cfg.train.precision, self.device)
        self.recorder = AssemblyRecorder(cfg.run.name, run_id)
        with warnings.catch_warnings():  # Ray's own property warns about its internals
            warnings.simplefilter("ignore")
            restarted = ray.get_runtime_context().was_current_actor_reconstructed
        self.incarnation = self._count_restart() if restarted else 0

    def __repr__(self) -> str:  # Ray's name of the actor, as BlockActor's
        return f"AssemblerActor(run={self.cfg.run.name})"

    def _count_restart(self) -> int:
        count = 1 + (self.storage.read_json(RESTARTS)["restarts"]
                     if self.storage.exists(RESTARTS) else 0)
        self.storage.write_json(RESTARTS, {"restarts": count})
        return count

    def assemble(self, write_samples: bool = True) -> dict[str, float]:
        if not write_samples and faults.due(self.cfg, faults.ASSEMBLER, self.incarnation):
            faults.die()  # fault injection (debug.chaos_*): during a mid-training assembly
        metrics = assemble(self.cfg, self.storage, self.index, self.device, write_samples)
        self.recorder.record(metrics)
        return metrics
