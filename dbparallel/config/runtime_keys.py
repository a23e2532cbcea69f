"""The runtime, metrics and debug sections of the config schema (config/schema.py): where the
blocks run, what each reserves, and the fault injection the reliability tests use."""

from __future__ import annotations

from dataclasses import dataclass

from dbparallel.config.amounts import parse_bytes
from dbparallel.config.checks import check, finite


@dataclass
class RuntimeConfig:
    local: bool = False  # run the block trainers in this process, without Ray
    address: str = ""  # Ray address; "" = RAY_ADDRESS if set, else a private local instance
    num_cpus: int = 0  # CPUs of a private local instance; 0 = all
    cpus_per_block: float = 0.5  # CPUs reserved by each block actor (each replica)
    # GPUs per block actor (each replica; fractions share a card); 0 = CPU
    gpus_per_block: float = 0.0
    # data-parallel workers of each block (Ray Train, one process group per block); each
    # takes an even share of train.batch_size, which stays the block's global batch
    replicas_per_block: int = 1
    torch_threads: int = 1  # torch threads per block trainer
    assembly_cpus: float = 0.0  # CPUs reserved by the assembly actor
    assembly_gpus: float = 0.0  # GPUs of the assembly actor; 0 = it samples on CPU
    # blocks training at once; the others queue and start as blocks finish (waves); 0 = as
    # many as the cluster has room for now, up to model.blocks
    max_concurrent_blocks: int = 0
    placement_timeout_s: float = 300.0  # wait this long for the cluster to fit the blocks
    # that train at once and the assembly actor
    devices: int = 0  # GPUs of the cluster for `dbparallel plan`; 0 = detect (or none)
    device_memory: str = ""  # memory of one device, e.g. 80GiB: plan, model.blocks=auto
    device_name: str = ""  # the GPUs' model (H100, A100, ...) for plan's step-rate estimate;
    # "" = this machine's GPU, if any
    object_store_memory: int = 0  # bytes of a private local instance's object store; 0 = Ray's

    @property
    def device_memory_bytes(self) -> int:
        return parse_bytes(self.device_memory, "runtime.device_memory")

    def __post_init__(self) -> None:
        finite(self, "runtime")
        check(self.num_cpus >= 0, "runtime.num_cpus", "must be >= 0")
        check(self.cpus_per_block > 0, "runtime.cpus_per_block", "must be > 0")
        check(self.gpus_per_block >= 0, "runtime.gpus_per_block", "must be >= 0")
        check(self.torch_threads >= 1, "runtime.torch_threads", "must be >= 1")
        check(self.replicas_per_block >= 1, "runtime.replicas_per_block", "must be >= 1")
        check(self.assembly_cpus >= 0, "runtime.assembly_cpus", "must be >= 0")
        check(self.assembly_gpus >= 0, "runtime.assembly_gpus", "must be >= 0")
        check(self.placement_timeout_s > 0, "runtime.placement_timeout_s", "must be > 0")
        check(self.max_concurrent_blocks >= 0, "runtime.max_concurrent_blocks",
               "must be >= 0 (0 = as many as the cluster fits)")
        check(self.devices >= 0, "runtime.devices", "must be >= 0")
        self.device_memory_bytes  # noqa: B018 (validates it)
        check(self.object_store_memory >= 0, "runtime.object_store_memory", "must be >= 0")


@dataclass
class MetricsConfig:
    port: int = 9464  # Prometheus port of a local run (/metrics) or of a private Ray
    # instance's metrics export; 0 = a local run serves none, and Ray picks the instance's
    linger_s: float = 30.0  # seconds a finished run still serves its final scores (the assembly
    # gauges), after report.json is written, so that Ray's export (every 10 s) and a scrape
    # (every 15 s) reach them; 0 = the run ends at once; Ctrl-C or `dbparallel stop` ends it
    # early. No wait where a local run serves no metrics (metrics.port=0)

    def __post_init__(self) -> None:
        finite(self, "metrics")
        check(0 <= self.port < 65536, "metrics.port", f"must be in [0, 65535], got {self.port}")
        check(self.linger_s >= 0, "metrics.linger_s",
              f"must be >= 0 seconds (0 = end at once), got {self.linger_s:g}")


@dataclass
class DebugConfig:
    kill_block: int = -1  # block whose actor exits hard once, at kill_at_step; -1 = none
    kill_at_step: int = -1  # step at which kill_block's actor exits
    kill_times: int = 1  # how many of kill_block's actor processes die at kill_at_step
    kill_replica: int = 0  # with runtime.replicas_per_block > 1: the rank of the one that dies
    chaos_seed: int = -1  # >= 0: seed of a schedule of chaos_kills hard kills (runtime/faults.py)
    chaos_kills: int = 0  # kills of block actors (and of the assembly actor) in that schedule
