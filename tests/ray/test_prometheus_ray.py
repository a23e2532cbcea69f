"""A real Prometheus server (Debian's `prometheus`) scrapes the Ray node during a training run:
every Grafana panel's query and the run and run_id variables return the run's series, per
block, and the alert rules load and stay quiet. Skipped where the prometheus binary is not
installed."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from dbparallel.config import load_config

pytestmark = [pytest.mark.ray, pytest.mark.skipif(shutil.which("prometheus") is None,
                                                  reason="prometheus not installed")]
ROOT = Path(__file__).resolve().parents[2]
RUN = "prom"
PER_BLOCK = ("block_loss", "block_steps_total", "block_samples_per_second",
             "block_step_time_seconds", "block_memory_bytes", "block_sigma_low",
             "block_sigma_high", "block_heldout_loss", "block_stalled")
DIT_ASSEMBLY = ("assembly_sample_accuracy", "assembly_fd_indomain")


def _train(run_dir: Path, *overrides: str) -> dict:
    from dbparallel.runtime.launch import run_ray

    cfg = load_config([ROOT / "jobs" / "tiny_cpu.yaml"], [f"run.dir={run_dir}", *overrides])
    return run_ray(cfg, None, progress=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(tmp_path: Path, metrics_port: int) -> Path:
    """deploy/prometheus/scrape_config.yml with its alert rules, scraping this node each
    second (the file's service discovery names the default /tmp/ray, which other local Ray
    instances may rewrite; a static target is the same scrape)."""
    config = yaml.safe_load((ROOT / "deploy/prometheus/scrape_config.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    job = config["scrape_configs"][0]
    assert job["job_name"] == "ray" and "file_sd_configs" in job
    del job["file_sd_configs"]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{metrics_port}"]}]
    alerts = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yaml").read_text())["spec"]
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(alerts))
    config["rule_files"] = [str(tmp_path / "rules.yml")]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def _api(port: int, path: str, **params: str) -> dict:
    url = f"http://127.0.0.1:{port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    body = json.loads(urllib.request.urlopen(url, timeout=5).read())
    assert body["status"] == "success", body
    return body["data"]


def _run_ids(port: int, variable: str) -> list[str]:
    """The values of the dashboard's run_id variable (``label_values(SELECTOR, run_id)``)
    for the run named RUN, as Grafana asks Prometheus for them."""
    selector = re.fullmatch(r"label_values\((.*), run_id\)", variable).group(1)
    return _api(port, "label/run_id/values", **{"match[]": selector.replace("$run", RUN)})


def _query(port: int, expr: str, run_ids: list[str]) -> dict[str, float]:
    """{block or run label: value} of an instant query, $run_id as Grafana sends All: every
    value the variable lists."""
    expr = expr.replace("$run_id", "(" + "|".join(run_ids) + ")")
    data = _api(port, "query", query=expr.replace("$run", RUN))
    return {r["metric"].get("block", r["metric"].get("run", "")): float(r["value"][1])
            for r in data["result"]}


@pytest.fixture
def prometheus(ray_session, tmp_path):
    port = _free_port()
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={_config(tmp_path, ray_session['metrics_port'])}",
         f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1)
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "no prometheus"
                time.sleep(0.3)
        yield port
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_every_dashboard_query_answers_from_a_live_scrape(prometheus, tmp_path) -> None:
    dashboard = json.loads((ROOT / "deploy/grafana/dbparallel.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    per_block = [e for e in exprs if any(f"dbparallel_{m}" in e for m in PER_BLOCK)]
    assembly = [e for e in exprs if any(f"dbparallel_{m}" in e for m in DIT_ASSEMBLY)]
    rate = next(e for e in exprs if e.startswith("sum by (run_id, block) (rate("))
    variable = next(v for v in dashboard["templating"]["list"]
                    if v["name"] == "run_id")["definition"]
    assert len(per_block) >= len(PER_BLOCK) and len(assembly) == len(DIT_ASSEMBLY)
    wanted = list(dict.fromkeys([*per_block, *assembly, rate]))

    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(report=_train(
        tmp_path / "run", "train.steps=60", "train.heldout_every=20", f"run.name={RUN}")))
    thread.start()
    answered: dict[str, dict[str, float]] = {}
    peak_rate: dict[str, float] = {}  # highest step rate Prometheus computed per block
    deadline = time.monotonic() + 300  # a hung run fails the test instead of the suite
    while (thread.is_alive() or len(answered) < len(wanted)) and time.monotonic() < deadline:
        run_ids = _run_ids(prometheus, variable)  # none until a block process has started
        for expr in wanted if run_ids else []:
            values = _query(prometheus, expr, run_ids)
            want = {RUN} if expr in assembly else {""} if expr.startswith("sum by (run_id) (") \
                else {"0", "1"}
            if want <= set(values):
                answered[expr] = values
            if expr == rate:
                for block, value in values.items():
                    peak_rate[block] = max(value, peak_rate.get(block, 0.0))
        if not thread.is_alive() and time.monotonic() > result.setdefault(
                "give_up", time.monotonic() + 20):
            break
        time.sleep(1)
    thread.join(timeout=60)
    assert not thread.is_alive(), "the training run did not finish"
    report = result["report"]
    missing = [e for e in wanted if e not in answered]
    assert not missing, f"no answer from Prometheus for {missing}"

    def panel(metric: str) -> dict[str, float]:
        (expr,) = [e for e in answered if f"({metric}{{" in e]
        return answered[expr]

    assert panel("ray_dbparallel_block_stalled") == {"0": 0.0, "1": 0.0}  # 0 from its start
    losses = panel("ray_dbparallel_block_loss")
    assert all(0 < v < 100 for v in losses.values())
    memory = panel("ray_dbparallel_block_memory_bytes")
    assert memory == {str(r["block"]): r["peak_memory_bytes"] for r in report["per_block"]}
    # the step-rate panel answers for every block; whether Prometheus saw two different
    # counter values inside its rate window depends on how fast the machine trains, so only
    # the sign is checked (a positive rate would be a timing assertion)
    assert set(peak_rate) >= {"0", "1"} and all(v >= 0 for v in peak_rate.values()), peak_rate
    # the assembly at the end of the run (the only one here) reaches Prometheus
    accuracy = panel("ray_dbparallel_assembly_sample_accuracy")
    assert accuracy[RUN] == pytest.approx(report["assembly"]["sample_accuracy"])
    # the dashboard's run variable lists this run, its run_id variable this run directory's id
    assert RUN in _api(prometheus, "label/run/values", **{"match[]": "ray_dbparallel_block_loss"})
    assert _run_ids(prometheus, variable) == [report["run_id"]]
    assert report["run_id"] == (tmp_path / "run" / "run_id.txt").read_text().strip()
    # the alert rules loaded, evaluate without error, and none fires on a healthy run
    groups = _api(prometheus, "rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert rules and all(r["health"] == "ok" for r in rules), rules
    firing = [a for a in _api(prometheus, "alerts")["alerts"]
              if a["labels"].get("run") == RUN and a["state"] == "firing"]
    assert not firing, firing
