"""``dbparallel plan``: a config's partition, per-block sizes and how its blocks fill a
cluster, without training; exit code 1 where a run of it could not train."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from dbparallel.cli_data import config_of
from dbparallel.config import Config

if TYPE_CHECKING:
    from dbparallel.training.cluster_fit import Cluster

EXIT_DOES_NOT_FIT = 1


def _cluster(cfg: Config) -> Cluster:
    """runtime.devices if given, else the cluster at runtime.address / RAY_ADDRESS, else this
    machine."""
    import os

    import torch

    from dbparallel.training.cluster_fit import Cluster

    if cfg.runtime.devices:
        return Cluster(float("inf"), float(cfg.runtime.devices), "runtime.devices",
                       cfg.runtime.device_name)
    if cfg.runtime.address or os.environ.get("RAY_ADDRESS"):
        from dbparallel.runtime.launch import detect_cluster

        found = detect_cluster(cfg)
        return Cluster(found.cpus, found.gpus, found.source, cfg.runtime.device_name,
                       found.joined)
    here = torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
    return Cluster(float(cfg.runtime.num_cpus or os.cpu_count() or 1),
                   float(torch.cuda.device_count()), "this machine",
                   cfg.runtime.device_name or here)


def cmd_plan(args: argparse.Namespace) -> int:
    from dbparallel.tasks import unused_blocks_warning
    from dbparallel.training.plan import plan, plan_table

    cfg = config_of(args)
    result = plan(cfg, _cluster(cfg))
    print(json.dumps(result, indent=2) if args.json else plan_table(cfg, result))
    unused = unused_blocks_warning(cfg)
    if unused:
        print(f"plan: warning: {unused}", file=sys.stderr)
    short = _does_not_fit(result["cluster"])
    if short:
        print(f"plan: {short}; exit code {EXIT_DOES_NOT_FIT}", file=sys.stderr)
        return EXIT_DOES_NOT_FIT
    return 0


def _does_not_fit(cluster: dict) -> str:
    """Why a run of the plan could not train on its cluster ('' if it could): a block's step
    beyond runtime.device_memory, or one block beyond a cluster that cannot grow
    (runtime.devices, this machine; a detected cluster may gain nodes while a run waits)."""
    if cluster["fits"] is False:
        from dbparallel.config import bytes_text
        from dbparallel.training.cluster_fit import USABLE

        return (f"a device holds {bytes_text(cluster['memory_per_device_bytes'])} of training, "
                f"more than {USABLE:.0%} of runtime.device_memory="
                f"{bytes_text(cluster['device_memory_bytes'])}")
    if not cluster["room"] and cluster["source"] != "detected":
        return f"one block is more than the cluster ({cluster['source']}) has"
    return ""


def add_parsers(sub: argparse._SubParsersAction, config_help: str) -> None:
    """The plan subcommand, on ``sub``."""
    pl = sub.add_parser(
        "plan", help="show the partition and per-block sizes, no training",
        epilog="for a cluster: runtime.devices=N (its GPUs), runtime.device_memory=80GiB (one "
               "GPU's), runtime.device_name=H100 (a step-rate estimate), "
               "runtime.gpus_per_block=1; model.blocks=auto picks B; every key: "
               "dbparallel train ... --help-config; docs/cluster.md. Exit code 1 when a "
               "block does not fit (runtime.device_memory, or a cluster that cannot grow), "
               "2 for a bad config")
    pl.add_argument("config", nargs="*", help=config_help)
    pl.add_argument("--json", action="store_true", help="print the plan as JSON")
    pl.set_defaults(func=cmd_plan)
