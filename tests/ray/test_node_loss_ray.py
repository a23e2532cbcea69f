"""A whole node lost mid-run: its block restarts on another node and the run ends with the same
weights as a run without the fault. Several Ray nodes on this machine (Ray's own
``ray.cluster_utils.Cluster``: a head with no CPU, three 1-CPU nodes for two 1-CPU blocks), the
run directory on an S3-compatible server (moto). In its own process: one Ray per process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, sys, threading, time
import ray
from ray.cluster_utils import Cluster
from dbparallel.config import load_config
from dbparallel.runtime.launch import run_ray
from dbparallel.training.storage import Storage

def ancestors(pid):
    found = set()
    while pid > 1:
        with open(f"/proc/{pid}/stat") as f:
            pid = int(f.read().rsplit(")", 1)[1].split()[1])
        found.add(pid)
    return found

recipe, run_dir, out = sys.argv[1], sys.argv[2], sys.argv[3]
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
nodes = [cluster.add_node(num_cpus=1) for _ in range(3)]
ray.init(address=cluster.address, logging_level="ERROR")
cfg = load_config([recipe], [f"run.dir={run_dir}", "runtime.cpus_per_block=1",
                             "train.steps=48", "train.checkpoint_every=6"])
result = {}
thread = threading.Thread(target=lambda: result.update(report=run_ray(cfg, None, False)))
thread.start()
storage, killed = Storage(run_dir), None
deadline = time.monotonic() + 300
while killed is None and thread.is_alive() and time.monotonic() < deadline:
    time.sleep(0.5)
    rel = "blocks/block_1/manifest.json"
    if not storage.exists(rel) or not storage.read_json(rel)["state"]:
        continue  # block 1 has not checkpointed yet
    pid = int(storage.read_json("blocks/block_1/lease.json")["holder"].split("/")[2])
    above = ancestors(pid)
    for node in nodes:
        if node.all_processes["raylet"][0].process.pid in above:
            cluster.remove_node(node, allow_graceful=False)  # its raylet and workers die
            killed = node
thread.join(timeout=600)
json.dump({"killed": killed is not None, "report": result.get("report")}, open(out, "w"))
"""


def test_a_lost_node_moves_its_block_and_the_weights_match(tmp_path) -> None:
    moto = pytest.importorskip("moto.server", reason="moto[server] is in the test extra")
    import pyarrow.fs as pafs

    server = moto.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
               "RAY_USAGE_STATS_ENABLED": "0"}
        env.pop("RAY_ADDRESS", None)
        pafs.S3FileSystem(endpoint_override=f"{host}:{port}", scheme="http",
                          region="us-east-1", allow_bucket_creation=True).create_dir("runs")
        run_dir = f"s3://runs/lost?endpoint_override={host}:{port}&scheme=http&region=us-east-1"
        out = tmp_path / "out.json"
        recipe = str(ROOT / "jobs" / "tiny_cpu.yaml")
        proc = subprocess.run([sys.executable, "-c", SCRIPT, recipe, run_dir, str(out)],
                              env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        faulted = json.loads(out.read_text())
        assert faulted["killed"], "block 1's node was never found and killed"
        report = faulted["report"]
        assert report is not None, proc.stderr[-3000:]
        assert report["per_block"][1]["restarts"] >= 1

        from dbparallel.config import load_config
        from dbparallel.runtime.local import run_local
        from dbparallel.training.checkpoint import BlockCheckpoints
        from dbparallel.training.storage import Storage

        clean_dir = str(tmp_path / "clean")
        run_local(load_config([recipe], [f"run.dir={clean_dir}", "train.steps=48",
                                         "train.checkpoint_every=6"]), None, False)
        for block in (0, 1):
            a = BlockCheckpoints(Storage(run_dir), block).load_latest("snapshot")["ema"]
            b = BlockCheckpoints(Storage(clean_dir), block).load_latest("snapshot")["ema"]
            assert a.keys() == b.keys()
            assert all(torch.equal(a[k], b[k]) for k in a), f"block {block} differs"
    finally:
        server.stop()
