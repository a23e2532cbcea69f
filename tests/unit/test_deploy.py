"""Deployment files: they parse, match the schemas of their kinds, and agree with the package.

No cluster is reachable from a test, so the checks are structural: hand-written JSON schemas
(tests/schemas/) with ``additionalProperties: false`` catch misspelled or misplaced fields, and
the cross-file checks catch the mistakes a schema cannot see (a GPU-less worker group, a metric
the package does not export, a version skew between image, cluster and package).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
from functools import cache
from pathlib import Path

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource

from dbparallel.runtime.metric_specs import exported_names

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "tests" / "schemas"
DEPLOY_FILES = sorted(
    p
    for pattern in ("deploy/**/*.yaml", "deploy/**/*.yml", "deploy/**/*.json", "cluster/*.yaml")
    for p in ROOT.glob(pattern)
)
SCHEMA_OF_KIND = {
    "RayJob": "rayjob",
    "RayCluster": "raycluster",
    "PersistentVolumeClaim": "persistentvolumeclaim",
    "PodMonitor": "podmonitor",
    "PrometheusRule": "prometheusrule",
}
METRIC = re.compile(r"ray_dbparallel_[a-z_]+")
PROMTOOL = shutil.which("promtool")


@cache
def load(rel: str) -> tuple:
    """Every document of a YAML or JSON file under the repository root."""
    text = (ROOT / rel).read_text()
    return tuple(d for d in yaml.safe_load_all(text) if d is not None)


def one(rel: str) -> dict:
    (doc,) = load(rel)
    return doc


@cache
def registry() -> Registry:
    schemas = [json.loads(p.read_text()) for p in sorted(SCHEMAS.glob("*.schema.json"))]
    return Registry().with_resources((s["$id"], Resource.from_contents(s)) for s in schemas)


def validator(name: str, definition: str = "") -> jsonschema.Draft202012Validator:
    """The validator of tests/schemas/NAME.schema.json, or of one of its $defs."""
    schema_id = json.loads((SCHEMAS / f"{name}.schema.json").read_text())["$id"]
    ref = schema_id + (f"#/$defs/{definition}" if definition else "")
    return jsonschema.Draft202012Validator({"$ref": ref}, registry=registry())


def validator_for(rel: str, doc: dict) -> jsonschema.Draft202012Validator:
    if rel.startswith("cluster/"):
        return validator("ray_cluster_launcher")
    if rel.startswith("deploy/grafana/"):
        return validator("grafana_dashboard")
    if "groups" in doc and "kind" not in doc:  # a plain rule file written from alerts.yaml
        return validator("prometheusrule", "ruleFile")
    return validator(SCHEMA_OF_KIND[doc["kind"]])


def ray_pod_templates(cluster_spec: dict) -> list[dict]:
    head = cluster_spec["headGroupSpec"]["template"]
    return [head] + [g["template"] for g in cluster_spec["workerGroupSpecs"]]


def cluster_specs() -> dict[str, dict]:
    return {
        "rayjob": one("deploy/kuberay/rayjob.yaml")["spec"]["rayClusterSpec"],
        "raycluster": one("deploy/kuberay/raycluster.yaml")["spec"],
    }


def dashboard_exprs() -> list[str]:
    dash = one("deploy/grafana/dbparallel.json")
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def alert_rules() -> list[dict]:
    return [r for g in one("deploy/prometheus/alerts.yaml")["spec"]["groups"] for r in g["rules"]]


def test_deploy_files_exist():
    names = {p.relative_to(ROOT).as_posix() for p in DEPLOY_FILES}
    assert {
        "deploy/kuberay/rayjob.yaml",
        "deploy/kuberay/raycluster.yaml",
        "deploy/kuberay/pvc.yaml",
        "deploy/prometheus/podmonitor.yaml",
        "deploy/prometheus/scrape_config.yml",
        "deploy/prometheus/alerts.yaml",
        "deploy/grafana/dbparallel.json",
        "cluster/gpu_cluster.yaml",
        "cluster/local_cluster.yaml",
    } <= names


@pytest.mark.parametrize("path", DEPLOY_FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_file_parses_and_matches_its_schema(path: Path):
    rel = path.relative_to(ROOT).as_posix()
    docs = load(rel)
    assert docs, f"{rel} holds no document"
    if rel == "deploy/prometheus/scrape_config.yml":
        return  # a Prometheus config, not a resource: checked below
    for doc in docs:
        validator_for(rel, doc).validate(doc)


# Each mutation breaks one rule a schema must enforce; a schema that accepts it checks nothing.
def _drop_group_name(d):
    del d["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["groupName"]


def _typo_in_spec(d):
    d["spec"]["entryPoint"] = d["spec"].pop("entrypoint")


def _numeric_start_param(d):
    d["spec"]["headGroupSpec"]["rayStartParams"]["num-gpus"] = 0


def _worker_without_image(d):
    del d["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["image"]


def _misplaced_gpu_limit(d):
    container = d["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    container["limits"] = container["resources"].pop("limits")


def _endpoint_typo(d):
    d["spec"]["podMetricsEndpoints"][0]["prot"] = "metrics"


def _rule_without_expr(d):
    del d["spec"]["groups"][0]["rules"][0]["expr"]


def _local_with_node_types(d):
    d["available_node_types"] = {"gpu": {"resources": {"GPU": 1}, "node_config": {}}}


def _docker_typo(d):
    d["docker"]["imag"] = d["docker"].pop("image")


def _panel_without_grid(d):
    del d["panels"][1]["gridPos"]


@pytest.mark.parametrize(
    ("rel", "index", "schema", "mutate"),
    [
        ("deploy/kuberay/rayjob.yaml", 0, "rayjob", _drop_group_name),
        ("deploy/kuberay/rayjob.yaml", 0, "rayjob", _typo_in_spec),
        ("deploy/kuberay/raycluster.yaml", 0, "raycluster", _numeric_start_param),
        ("deploy/kuberay/raycluster.yaml", 0, "raycluster", _worker_without_image),
        ("deploy/kuberay/raycluster.yaml", 0, "raycluster", _misplaced_gpu_limit),
        ("deploy/prometheus/podmonitor.yaml", 1, "podmonitor", _endpoint_typo),
        ("deploy/prometheus/alerts.yaml", 0, "prometheusrule", _rule_without_expr),
        ("cluster/local_cluster.yaml", 0, "ray_cluster_launcher", _local_with_node_types),
        ("cluster/gpu_cluster.yaml", 0, "ray_cluster_launcher", _docker_typo),
        ("deploy/grafana/dbparallel.json", 0, "grafana_dashboard", _panel_without_grid),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else None,
)
def test_schema_rejects_broken_copy(rel: str, index: int, schema: str, mutate):
    broken = copy.deepcopy(load(rel)[index])
    mutate(broken)
    with pytest.raises(jsonschema.ValidationError):
        validator(schema).validate(broken)


def test_cluster_configs_match_rays_own_launcher_schema():
    # Ray ships the schema `ray up` validates against; find_spec locates it without importing ray.
    spec = importlib.util.find_spec("ray")
    if spec is None or spec.origin is None:
        pytest.skip("ray is not installed")
    schema = json.loads((Path(spec.origin).parent / "autoscaler" / "ray-schema.json").read_text())
    for rel in ("cluster/gpu_cluster.yaml", "cluster/local_cluster.yaml"):
        jsonschema.validate(one(rel), schema)


def test_rayjob_runs_on_the_same_cluster_as_raycluster():
    specs = cluster_specs()
    assert specs["rayjob"] == specs["raycluster"]


def test_gpu_workers_and_a_gpu_free_head():
    for name, spec in cluster_specs().items():
        assert spec["headGroupSpec"]["rayStartParams"]["num-gpus"] == "0", name
        for c in spec["headGroupSpec"]["template"]["spec"]["containers"]:
            assert "nvidia.com/gpu" not in c.get("resources", {}).get("limits", {}), name
        assert spec["workerGroupSpecs"], name
        for group in spec["workerGroupSpecs"]:
            assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], name
            (container,) = group["template"]["spec"]["containers"]
            assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1, name


def test_run_storage_is_shared_by_every_ray_pod():
    pvc = one("deploy/kuberay/pvc.yaml")
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]
    for name, spec in cluster_specs().items():
        for template in ray_pod_templates(spec):
            claims = {
                v["name"]: v["persistentVolumeClaim"]["claimName"]
                for v in template["spec"]["volumes"]
                if "persistentVolumeClaim" in v
            }
            for c in template["spec"]["containers"]:
                mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
                assert claims.get(mounts.get("/mnt/runs")) == pvc["metadata"]["name"], name


def test_entrypoint_trains_a_recipe_into_the_shared_volume():
    argv = shlex.split(one("deploy/kuberay/rayjob.yaml")["spec"]["entrypoint"])
    assert argv[:4] == ["python", "-m", "dbparallel", "train"]
    assert any(re.fullmatch(r"jobs/[\w.-]+\.ya?ml", a) for a in argv[4:]), argv
    run_dirs = [a.split("=", 1)[1] for a in argv if a.startswith("run.dir=")]
    assert len(run_dirs) == 1 and run_dirs[0].startswith("/mnt/runs/"), argv


def test_auth_mode_is_the_same_everywhere():
    job = one("deploy/kuberay/rayjob.yaml")["spec"]
    runtime_env = yaml.safe_load(job["runtimeEnvYAML"])
    for spec in cluster_specs().values():
        assert spec["authOptions"]["mode"] == runtime_env["env_vars"]["RAY_AUTH_MODE"]
    mode = runtime_env["env_vars"]["RAY_AUTH_MODE"]
    for rel in ("cluster/gpu_cluster.yaml", "cluster/local_cluster.yaml"):
        config = one(rel)
        starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
        for cmd in (c for c in starts if "ray start" in c):
            assert f"RAY_AUTH_MODE={mode}" in cmd, (rel, cmd)
        if mode == "token":
            assert "~/.ray/auth_token" in config["file_mounts"], rel


def test_ray_version_matches_package_pin_and_image():
    pin = re.search(r"ray\[[^\]]*\]==([\d.]+)", (ROOT / "pyproject.toml").read_text()).group(1)
    for spec in cluster_specs().values():
        assert spec["rayVersion"] == pin
    base = re.search(r"ARG RAY_IMAGE=(\S+)", (ROOT / "docker/Dockerfile").read_text()).group(1)
    assert base.startswith(f"rayproject/ray:{pin}-"), base


def test_podmonitors_scrape_the_metrics_port_of_head_and_workers():
    monitors = load("deploy/prometheus/podmonitor.yaml")
    node_types = set()
    for m in monitors:
        assert m["metadata"]["labels"]["release"] == "prometheus"
        node_types.add(m["spec"]["selector"]["matchLabels"]["ray.io/node-type"])
        assert [e["port"] for e in m["spec"]["podMetricsEndpoints"]] == ["metrics"]
    assert node_types == {"head", "worker"}
    # The port the monitors name must exist on every Ray container (KubeRay exports there).
    for spec in cluster_specs().values():
        for template in ray_pod_templates(spec):
            for c in template["spec"]["containers"]:
                assert {"name": "metrics", "containerPort": 8080} in c["ports"]


def test_scrape_config_uses_rays_service_discovery_file():
    config = one("deploy/prometheus/scrape_config.yml")
    files = [
        f for job in config["scrape_configs"] for sd in job["file_sd_configs"] for f in sd["files"]
    ]
    assert files == ["/tmp/ray/prom_metrics_service_discovery.json"]


def test_alerts_cover_stall_nan_and_restarts_with_exported_metrics():
    # Plain Prometheus loads the same groups (VM clusters): spec alone is a valid rule file.
    validator("prometheusrule", "ruleFile").validate(one("deploy/prometheus/alerts.yaml")["spec"])
    rules = {r["alert"]: r["expr"] for r in alert_rules()}
    assert set(rules) == {
        "DbparallelBlockStalled",
        "DbparallelBlockNonFiniteLoss",
        "DbparallelBlockRestarting",
    }
    used = {name for expr in rules.values() for name in METRIC.findall(expr)}
    assert used <= exported_names(), used - exported_names()
    assert {"ray_dbparallel_block_stalled", "ray_dbparallel_block_steps_total"} <= set(
        METRIC.findall(rules["DbparallelBlockStalled"])
    )
    assert "ray_dbparallel_block_nonfinite_steps_total" in rules["DbparallelBlockNonFiniteLoss"]
    assert "ray_dbparallel_block_restarts_total" in rules["DbparallelBlockRestarting"]
    for expr in rules.values():
        # restarted actors add series; runs of one run.name are told apart by their run_id;
        # alerts name the block
        assert "by (run, run_id, block)" in expr and "by (run, block)" not in expr
        assert "and on (run, run_id, block)" in expr  # the guard: a process trains the block


def test_dashboard_uses_only_exported_metrics_and_shows_them_all():
    used = {name for expr in dashboard_exprs() for name in METRIC.findall(expr)}
    assert used <= exported_names(), used - exported_names()
    assert used == exported_names(), f"no panel for {exported_names() - used}"


LABEL_LISTS = re.compile(r"\b(?:by|on|without|ignoring)\s*\(([^)]*)\)")


def unknown_labels(expr: str) -> set[str]:
    """Labels ``expr`` selects, groups or matches on that not every metric it reads carries
    (its spec's tag_keys): such a query answers nothing, or merges what it meant to split."""
    from dbparallel.runtime.metric_specs import ALL_METRICS, exported_name

    keys = {exported_name(s): set(s.tag_keys) for s in ALL_METRICS}
    metrics = METRIC.findall(expr)
    assert metrics and set(metrics) <= set(keys), expr
    carried = set.intersection(*(keys[m] for m in metrics))
    used = {k.strip() for ks in LABEL_LISTS.findall(expr) for k in ks.split(",") if k.strip()}
    used |= set(re.findall(r"[{,]\s*(\w+)\s*(?:=~|!~|!=|=)", expr))
    return used - carried


def test_dashboard_and_alerts_read_only_the_labels_their_metrics_carry():
    dash = one("deploy/grafana/dbparallel.json")
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            assert not unknown_labels(expr), (panel["title"], expr)
            # a legend names labels the outermost aggregation keeps
            kept = {k.strip() for k in LABEL_LISTS.findall(expr)[0].split(",")}
            assert set(re.findall(r"{{(\w+)}}", target["legendFormat"])) <= kept, expr
    for variable in dash["templating"]["list"]:
        if variable["type"] == "query":
            selector, label = re.fullmatch(r"label_values\((.*), (\w+)\)",
                                           variable["definition"]).groups()
            assert not unknown_labels(f"max by ({label}) ({selector})"), variable["name"]
    for rule in alert_rules():
        assert not unknown_labels(rule["expr"]), rule["alert"]
        kept = set.intersection(*({k.strip() for k in ks.split(",")}
                                  for ks in LABEL_LISTS.findall(rule["expr"])))
        named = set(re.findall(r"\$labels\.(\w+)", json.dumps(rule["annotations"])))
        assert named and named <= kept, (rule["alert"], named - kept)
    # what the check catches: a label an assembly metric does not carry, a misspelled one
    assert unknown_labels("max by (run, run_id, block) (ray_dbparallel_assembly_fid)") == {
        "block"}
    assert unknown_labels('ray_dbparallel_block_loss{run=~"r", blok="0"}') == {"blok"}


def test_dashboard_has_per_block_loss_and_variables():
    dash = one("deploy/grafana/dbparallel.json")
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["run"]["definition"] == "label_values(ray_dbparallel_block_loss, run)"
    # the run directories of that name whose blocks had a live process: a gauge, which Ray
    # stops exporting when a worker ends (a dead worker's counters stay); All is the ids
    # listed, never a regex that would bring the earlier runs' counters back
    run_id = variables["run_id"]
    assert run_id["definition"] == \
        'label_values(ray_dbparallel_block_sigma_high{run=~"$run"}, run_id)'
    assert run_id["query"]["query"] == run_id["definition"]
    assert run_id["includeAll"] and run_id["multi"] and "allValue" not in run_id
    loss = [
        t
        for p in dash["panels"]
        for t in p.get("targets", [])
        if t["expr"] == 'max by (run_id, block) '
                        '(ray_dbparallel_block_loss{run=~"$run", run_id=~"$run_id"})'
    ]
    assert loss and loss[0]["legendFormat"] == "{{run_id}} block {{block}}"
    for expr in dashboard_exprs():  # each run directory's series apart, whatever is chosen
        assert '{run=~"$run", run_id=~"$run_id"}' in expr, expr
        assert all("run_id" in by for by in re.findall(r"by \(([^)]*)\)", expr)), expr
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]


def test_dockerfile_installs_cuda_torch_then_the_package():
    text = (ROOT / "docker/Dockerfile").read_text()
    lines = [ln.strip() for ln in text.replace("\\\n", " ").splitlines()]
    torch_at = next(i for i, ln in enumerate(lines) if re.search(r"pip install .*torch==", ln))
    package_at = next(
        i for i, ln in enumerate(lines) if re.search(r"pip install\b.*\s\.(\s|$)", ln)
    )
    assert torch_at < package_at
    assert "download.pytorch.org/whl/${TORCH_CUDA}" in lines[torch_at]
    assert re.search(r"^ARG TORCH_CUDA=cu\d+$", text, re.M)
    assert not re.search(r"pip install[^\n]*\s-e\s", text)
    ignored = {ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", "runs", "benchmarks/results"} <= ignored
    assert not {"jobs", "dbparallel", "pyproject.toml"} & ignored  # the entrypoint needs them


def test_launcher_configs_give_each_block_a_gpu():
    aws = one("cluster/gpu_cluster.yaml")
    types = aws["available_node_types"]
    assert types[aws["head_node_type"]]["resources"].get("GPU", 0) == 0
    workers = [t for name, t in types.items() if name != aws["head_node_type"]]
    assert workers and all(t["resources"]["GPU"] >= 1 for t in workers)
    for rel in ("cluster/gpu_cluster.yaml", "cluster/local_cluster.yaml"):
        assert one(rel)["docker"]["image"].endswith("dbparallel:latest"), rel


def _promtool(*args: str, cwd: Path) -> None:
    result = subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed")
def test_promtool_accepts_rules_dashboard_queries_and_config(tmp_path: Path):
    spec = one("deploy/prometheus/alerts.yaml")["spec"]
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(spec))
    queries = [
        {"record": f"dashboard:q{i}", "expr": _grafana(e, "r", ["a0", "b1"])}
        for i, e in enumerate(dashboard_exprs())
    ]
    (tmp_path / "queries.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "q", "rules": queries}]})
    )
    _promtool("check", "rules", "rules.yml", "queries.yml", cwd=tmp_path)
    _promtool("check", "config", str(ROOT / "deploy/prometheus/scrape_config.yml"), cwd=tmp_path)


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed")
def test_alerts_fire_on_synthetic_series(tmp_path: Path):
    spec = copy.deepcopy(one("deploy/prometheus/alerts.yaml")["spec"])
    for group in spec["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations")  # promtool would compare the rendered text too
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(spec))
    steps, loss = "ray_dbparallel_block_steps_total", "ray_dbparallel_block_loss"
    new, old = 'run="r",run_id="b1"', 'run="r",run_id="a0"'  # two runs of one run.name
    series = [
        # Block 0 keeps stepping and its loss stays put (the gauge holds the last finite loss)
        # while it skips non-finite steps; block 1 stops stepping at 5m; block 2 skips a
        # non-finite step at 10m; block 3's actor restarts three times in a row (one counter).
        (f'{steps}{{{new},block="0"}}', "0+10x30"),
        (f'{steps}{{{new},block="1"}}', "0+10x5 50x25"),
        (f'{loss}{{{new},block="0"}}', "0.5x30"),
        (f'ray_dbparallel_block_nonfinite_steps_total{{{new},block="0"}}', "0x12 1+2x18"),
        (f'ray_dbparallel_block_nonfinite_steps_total{{{new},block="2"}}', "0x10 1+1x20"),
        (f'ray_dbparallel_block_restarts_total{{{new},block="3"}}', "0x10 1 2 3 3x20"),
        # Every block of this run has a live process (block 1's hung): its gauges stay exported.
        *[(f'ray_dbparallel_block_step_time_seconds{{{new},block="{b}"}}', "0.1x30")
          for b in "0123"],
        # An earlier run of the same recipe (run.name), in another run directory, ended
        # before: Ray keeps exporting a dead worker's counters (not its gauges) until its node
        # restarts, so its counters stand still with no gauge beside. Its skipped steps
        # (block 1) and restarts (block 0) are not this run's, whose blocks 0 and 1 train.
        (f'{steps}{{{old},block="0"}}', "50x30"),
        (f'ray_dbparallel_block_nonfinite_steps_total{{{old},block="1"}}', "2x30"),
        (f'ray_dbparallel_block_restarts_total{{{old},block="0"}}', "5x30"),
    ]

    def fired(at: str, alert: str, severity: str, blocks: list[str]) -> dict:
        labels = [{"severity": severity, "run": "r", "run_id": "b1", "block": b}
                  for b in blocks]
        return {
            "eval_time": at,
            "alertname": alert,
            "exp_alerts": [{"exp_labels": x} for x in labels],
        }

    tests = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in series],
                "alert_rule_test": [
                    fired("5m", "DbparallelBlockStalled", "warning", []),
                    fired("25m", "DbparallelBlockStalled", "warning", ["1"]),
                    fired("25m", "DbparallelBlockNonFiniteLoss", "critical", ["0", "2"]),
                    fired("20m", "DbparallelBlockRestarting", "warning", ["3"]),
                ],
            }
        ],
    }
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests))
    _promtool("test", "rules", "tests.yml", cwd=tmp_path)


def _grafana(expr: str, run: str, run_ids: list[str]) -> str:
    """A dashboard query as Grafana sends it: $run one name, $run_id the ids chosen (All: every
    id the variable lists) as a regex alternation."""
    return expr.replace("$run_id", "(" + "|".join(run_ids) + ")").replace("$run", run)


def _panel_expr(metric: str) -> str:
    (expr,) = [e for e in dashboard_exprs() if metric in e]
    return expr


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed")
def test_dashboard_reads_each_run_of_one_name_alone(tmp_path: Path):
    """Three runs of one run.name: a0 ended before (its counters still exported, standing
    still, no gauge), b1 lives and its block 0 was restarted twice (three workers' series),
    c2 trains beside it. The Run ID variable lists b1 and c2; with All, the restarts panel
    reads b1's own count (2, not a0's 5, nor its workers' counts added up) and the step-rate
    panel each run's rate apart (not their sum)."""
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": []}))
    steps, restarts = "ray_dbparallel_block_steps_total", "ray_dbparallel_block_restarts_total"
    sigma = "ray_dbparallel_block_sigma_high"

    def labels(run_id: str, worker: str) -> str:
        return f'{{run="r",run_id="{run_id}",block="0",WorkerId="{worker}"}}'

    # one sample every 15 s: worker w1 trains 0-2.5m, w2 (restart 1) 2.75-5m, w3 (restart 2)
    # from 5.25m; a dead worker's counters stand still, its gauges go (stale)
    series = [
        (steps + labels("a0", "w0"), "300x40"),
        (restarts + labels("a0", "w0"), "5x40"),
        (steps + labels("b1", "w1"), "0+15x10 150x30"),
        (sigma + labels("b1", "w1"), "80x10 stale"),
        (steps + labels("b1", "w2"), "_x11 0+15x9 135x20"),
        (restarts + labels("b1", "w2"), "_x11 1x29"),
        (sigma + labels("b1", "w2"), "_x11 80x9 stale"),
        (steps + labels("b1", "w3"), "_x21 0+15x19"),
        (restarts + labels("b1", "w3"), "_x21 2x19"),
        (sigma + labels("b1", "w3"), "_x21 80x19"),
        (steps + labels("c2", "w4"), "0+30x40"),
        (sigma + labels("c2", "w4"), "80x40"),
    ]
    variable = next(v for v in one("deploy/grafana/dbparallel.json")["templating"]["list"]
                    if v["name"] == "run_id")["definition"]
    selector = re.fullmatch(r"label_values\((.*), run_id\)", variable).group(1)
    every = ["b1", "c2"]  # what the variable lists: All

    def read(expr: str, *samples: tuple[str, float]) -> dict:
        return {"expr": expr, "eval_time": "8m",
                "exp_samples": [{"labels": x, "value": v} for x, v in samples]}

    tests = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "15s",
        "tests": [{
            "interval": "15s",
            "input_series": [{"series": s, "values": v} for s, v in series],
            "promql_expr_test": [
                # the variable's values (label_values of its gauge, as PromQL)
                read(f"count by (run_id) ({_grafana(selector, 'r', every)})",
                     ('{run_id="b1"}', 1), ('{run_id="c2"}', 1)),
                read(_grafana(_panel_expr(restarts), "r", every),
                     ('{block="0",run_id="b1"}', 2)),
                read(_grafana(_panel_expr(f"rate({steps}"), "r", every),
                     ('{block="0",run_id="b1"}', 1), ('{block="0",run_id="c2"}', 2)),
                read(_grafana(_panel_expr(restarts), "r", ["b1"]),
                     ('{block="0",run_id="b1"}', 2)),
            ],
        }],
    }
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests))
    _promtool("test", "rules", "tests.yml", cwd=tmp_path)
