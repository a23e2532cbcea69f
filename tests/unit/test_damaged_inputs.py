"""Damaged inputs are refused in one line naming the file or key, exit code 2, no traceback:
an export file whose metadata is damaged, a Parquet table to predict on that is not one, and a
Ray address where nothing answers. Nothing here trains or starts Ray."""

from __future__ import annotations

import socket
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import dbparallel
from dbparallel import cli
from dbparallel.config import load_config
from dbparallel.errors import ConfigError
from dbparallel.runtime.ray_connect import probe
from dbparallel.tasks import build_task
from dbparallel.training.export import META_SUM, checksum, export_bytes

ROOT = Path(__file__).resolve().parents[2]


def _export(path: Path, *overrides: str) -> Path:
    """An export of an untrained tiny network (as a trained one, but without the training)."""
    cfg = load_config([ROOT / "jobs" / "tiny_cpu.yaml"], list(overrides))
    task = build_task(cfg)
    weights = [task.build_block(b).state_dict() for b in range(cfg.model.blocks)]
    path.write_bytes(export_bytes(cfg, weights, [3] * cfg.model.blocks,
                                  task.partition.to_json(), None))
    return path


def _rewrite(good: Path, out: Path, tensors: dict | None = None, **meta: str | None) -> Path:
    """``good`` with metadata entries changed (None: removed), saved with safetensors as an
    export written before ``meta_sha256`` (which would refuse any change) unless it is given."""
    with safe_open(str(good), "pt") as f:
        entries = dict(f.metadata())
    entries.pop(META_SUM)
    for key, value in meta.items():
        if value is None:
            entries.pop(key, None)
        else:
            entries[key] = value
    save_file(tensors if tensors is not None else load_file(good), str(out), metadata=entries)
    return out


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(tmp_path_factory.mktemp("export") / "dit.safetensors")


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str], *names: str) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for name in names:
        assert name in err, err
    return err


def test_an_export_with_or_without_the_metadata_checksum_loads(good: Path,
                                                                tmp_path: Path) -> None:
    assert dbparallel.load(good).steps == [3, 3]
    old = _rewrite(good, tmp_path / "old.safetensors")  # as exports were before meta_sha256
    assert dbparallel.load(old).steps == [3, 3]


DAMAGE = {
    "no checksum": ({"sha256": None}, "damaged metadata: no 'sha256' entry"),
    "no config": ({"config": None}, "no 'config' entry"),
    "config not YAML": ({"config": "task: [dit\n  model"}, "'config': not valid YAML"),
    "config a list": ({"config": "[1, 2]"}, "'config': not a mapping"),
    "config bad value": ({"config": "model:\n  depth: two\n"}, "'config': model.depth"),
    "steps not JSON": ({"steps": "oops"}, "'steps': not JSON"),
    "steps too few": ({"steps": "[3]"}, "'steps': '[3]' is not a list of 2 steps"),
    "steps a number": ({"steps": "5"}, "'steps': '5' is not a list"),
    "partition not JSON": ({"partition": "{"}, "'partition': not JSON"),
    "partition another": ({"partition": '{"ranges": []}'}, "'partition': it disagrees"),
    "task another": ({"task": "vit"}, "'task': 'vit', while its config's task is 'dit'"),
    "tokenizer not JSON": ({"tokenizer": "{"}, "'tokenizer': not JSON"),
    "tokenizer not one": ({"tokenizer": '{"model": 1}'}, "'tokenizer': not a readable"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_an_export_with_damaged_metadata_is_refused_naming_the_part(
        case: str, good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    change, expected = DAMAGE[case]
    bad = _rewrite(good, tmp_path / "bad.safetensors", **change)
    out = tmp_path / "samples.png"
    _refused(["sample", str(bad), "--out", str(out)], capsys, str(bad),
             "not a readable dbparallel export", expected)
    assert not out.exists()


def test_a_config_whose_network_does_not_fit_the_tensors_is_refused(
        good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with safe_open(str(good), "pt") as f:
        config = f.metadata()["config"]
    assert "hidden: 32" in config
    bad = _rewrite(good, tmp_path / "wider.safetensors",
                   config=config.replace("hidden: 32", "hidden: 48"))
    _refused(["sample", str(bad), "--out", str(tmp_path / "s.png")], capsys, str(bad),
             "'config': its network does not fit the tensors: block 0:", "(1, 16, 48)")
    deeper = _rewrite(good, tmp_path / "deeper.safetensors",
                      config=config.replace("depth: 2", "depth: 4"))
    _refused(["sample", str(deeper), "--out", str(tmp_path / "s.png")], capsys, str(deeper),
             "does not fit the tensors: block 0: no tensor")


def test_tensor_names_that_are_not_blocks_are_refused(good: Path, tmp_path: Path) -> None:
    tensors = load_file(good)
    name = sorted(tensors)[0]
    tensors[name.replace("block_0/", "block_7/")] = tensors.pop(name)
    bad = _rewrite(good, tmp_path / "renamed.safetensors", tensors, sha256=checksum(tensors))
    with pytest.raises(dbparallel.errors.RunDirError, match="damaged tensor names: 'block_7/"):
        dbparallel.load(bad)


def test_changed_metadata_of_a_new_export_fails_its_checksum(
        good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with safe_open(str(good), "pt") as f:
        meta = dict(f.metadata())
    meta["steps"] = "[9, 9]"  # parses, and fits: only the checksum tells
    bad = tmp_path / "edited.safetensors"
    save_file(load_file(good), str(bad), metadata=meta)
    _refused(["sample", str(bad), "--out", str(tmp_path / "s.png")], capsys, str(bad),
             "damaged metadata: it does not match the file's checksum")


# ---------------------------------------------------------------------- predict's Parquet
@pytest.fixture(scope="module")
def vit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(tmp_path_factory.mktemp("export") / "vit.safetensors", "task=vit",
                   "model.patch_size=4")


def test_predict_refuses_a_parquet_file_that_is_not_one(
        vit: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.parquet"
    empty.write_bytes(b"")
    _refused(["predict", str(vit), str(empty)], capsys, str(empty),
             "not a readable Parquet table")
    folder = tmp_path / "tables"
    folder.mkdir()
    (folder / "x.parquet").write_bytes(b"garbage")  # 7 bytes
    _refused(["predict", str(vit), str(folder)], capsys, str(folder / "x.parquet"),
             "not a readable Parquet table")
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"this is not a parquet file, however long it is")
    _refused(["predict", str(vit), str(junk)], capsys, str(junk), "not a readable Parquet")


def test_predict_names_the_file_of_an_image_column_of_strings(
        vit: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    strings = tmp_path / "strings.parquet"
    pq.write_table(pa.table({"image": ["a", "b"]}), strings)
    _refused(["predict", str(vit), str(strings)], capsys, str(strings), "column 'image'",
             "got string")


# ---------------------------------------------------------------------- runtime.address
@pytest.fixture
def closed_port(monkeypatch: pytest.MonkeyPatch) -> int:
    """A local port nobody listens on: a connection to it is refused at once (and asked
    again for a second only, not ray_connect.PROBE_S)."""
    from dbparallel.runtime import ray_connect

    monkeypatch.setattr(ray_connect, "PROBE_S", 1.0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_head_that_starts_listening_while_probed_is_joined(closed_port: int,
                                                            monkeypatch) -> None:
    """A head still starting refuses at first: the probe asks again until PROBE_S."""
    import threading

    from dbparallel.runtime import ray_connect

    monkeypatch.setattr(ray_connect, "PROBE_S", 60.0)  # only a bound: it returns once answered
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

    def start() -> None:
        server.bind(("127.0.0.1", closed_port))
        server.listen()

    timer = threading.Timer(0.3, start)
    timer.start()
    try:
        probe(f"127.0.0.1:{closed_port}", "runtime.address")  # returns: it answered
    finally:
        timer.join()
        server.close()


def _never(*args: object, **kwargs: object) -> None:
    raise AssertionError("ray.init called: the address was not refused first")


def _joining_calls(monkeypatch: pytest.MonkeyPatch, init: object) -> None:
    """Joining a cluster calls ``init`` in place of ``ray.init``, as in a fresh process
    (whether or not the suite's own Ray instance is up in this one)."""
    from dbparallel.runtime import ray_connect

    monkeypatch.setattr(ray_connect.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray_connect.ray, "init", init)


def test_an_address_where_no_cluster_answers_is_refused_naming_the_key(
        closed_port: int, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    _joining_calls(monkeypatch, _never)
    address = f"127.0.0.1:{closed_port}"
    recipe = str(ROOT / "jobs" / "tiny_cpu.yaml")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    _refused(["plan", recipe, f"runtime.address={address}"], capsys, "runtime.address:",
             f"no Ray cluster answers at {address}")
    monkeypatch.setenv("RAY_ADDRESS", address)
    _refused(["plan", recipe], capsys, "RAY_ADDRESS:", f"no Ray cluster answers at {address}")
    _refused(["data", "check", recipe], capsys, "RAY_ADDRESS:", "no Ray cluster answers")


def test_an_address_whose_host_does_not_resolve_is_refused_naming_the_key_and_host(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # asked again for PROBE_S (a second here), as a head's name may resolve only once its
    # container starts, and then named as a host that does not resolve, not as one where no
    # cluster answers
    from dbparallel.runtime import ray_connect

    monkeypatch.setattr(ray_connect, "PROBE_S", 1.0)
    _joining_calls(monkeypatch, _never)
    address = "no-such-head.invalid:6379"  # RFC 6761: .invalid never resolves
    recipe = str(ROOT / "jobs" / "tiny_cpu.yaml")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    said = f"the host of {address}, no-such-head.invalid, does not resolve ("
    _refused(["plan", recipe, f"runtime.address={address}"], capsys, "runtime.address: " + said,
             "correct runtime.address")
    monkeypatch.setenv("RAY_ADDRESS", address)
    _refused(["data", "check", recipe], capsys, "RAY_ADDRESS: " + said, "correct RAY_ADDRESS")


@pytest.mark.parametrize("error", [socket.EAI_AGAIN, socket.EAI_NONAME])
def test_a_host_that_does_not_resolve_yet_is_asked_again(
        monkeypatch: pytest.MonkeyPatch, error: int) -> None:
    """A name the resolver cannot answer for now (EAI_AGAIN: its DNS server out of reach a
    moment), or one that resolves only once the head's container or pod starts (EAI_NONAME
    until then): the probe asks again, as it asks a head still starting, rather than telling
    to correct the address. (The resolver's failures are faked: they cannot be made here.)"""
    from dbparallel.runtime import ray_connect

    monkeypatch.setattr(ray_connect, "PROBE_S", 60.0)  # only a bound: it returns once answered
    real, failing = socket.getaddrinfo, [2]

    def resolver(*args: object, **kwargs: object) -> object:
        if failing[0]:
            failing[0] -= 1
            raise socket.gaierror(error, "no answer for this name yet")
        return real(*args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert probe(f"127.0.0.1:{server.getsockname()[1]}", "runtime.address") is True
    assert failing == [0]  # asked until it answered


def test_only_plain_host_port_addresses_are_probed(closed_port: int) -> None:
    for address in ("auto", "local", f"ray://127.0.0.1:{closed_port}", "", "somehost"):
        probe(address, "runtime.address")  # left to Ray: no connection tried
    with pytest.raises(ConfigError, match=r"^runtime.address: no Ray cluster answers"):
        probe(f"127.0.0.1:{closed_port}", "runtime.address")
    with pytest.raises(ConfigError, match=r"^RAY_ADDRESS: no Ray cluster answers"):
        probe(f"[::1]:{closed_port}", "RAY_ADDRESS")
    for port in (0, 65536 + closed_port):  # not taken modulo 65536 (closed_port's own)
        with pytest.raises(ConfigError, match=rf"^runtime.address: the port of 127.0.0.1:{port}, "
                                              rf"{port}, is no TCP port \(1-65535\)"):
            probe(f"127.0.0.1:{port}", "runtime.address")


def test_an_address_without_a_port_is_refused_naming_the_port_it_lacks(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _joining_calls(monkeypatch, _never)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    _refused(["plan", str(ROOT / "jobs" / "tiny_cpu.yaml"), "runtime.address=10.0.0.5"], capsys,
             "runtime.address=10.0.0.5 names no port", "HOST:PORT, e.g. 10.0.0.5:6379")


def test_a_dashboard_address_is_refused_naming_the_address_a_driver_takes(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _joining_calls(monkeypatch, _never)
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")  # what `ray job submit` takes
    _refused(["plan", str(ROOT / "jobs" / "tiny_cpu.yaml")], capsys,
             "RAY_ADDRESS=http://127.0.0.1:8265 is a dashboard address", "HEAD:6379")


def test_a_cluster_that_refuses_to_be_joined_is_an_error_naming_the_key_and_the_token(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # Ray's client gives up on a cluster whose token this process lacks with a ConnectionError
    # (after half a minute of retries; here at once)
    def refused(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Failed to connect to Ray cluster at 127.0.0.1:6379.\nmore")

    _joining_calls(monkeypatch, refused)
    with socket.socket() as head:  # something answers there: the probe lets it through
        head.bind(("127.0.0.1", 0))
        head.listen()
        address = f"127.0.0.1:{head.getsockname()[1]}"
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
        _refused(["plan", str(ROOT / "jobs" / "tiny_cpu.yaml"), f"runtime.address={address}"],
                 capsys, f"runtime.address: Ray could not join the cluster at {address}",
                 "(Failed to connect to Ray cluster at 127.0.0.1:6379.)", "RAY_AUTH_TOKEN")


def test_a_relative_run_dir_in_a_submitted_jobs_working_dir_copy_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from dbparallel.config import load_config
    from dbparallel.training.run_dir import refuse_a_passing_run_dir

    # where `ray job submit --working-dir .` runs its entrypoint
    copy = tmp_path / "session_1" / "runtime_resources" / "working_dir_files" / "_ray_pkg_0123"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    _refused(["train", "--local", str(ROOT / "jobs" / "tiny_cpu.yaml"), "run.name=tiny"],
             capsys, "run.dir=runs/tiny is relative", "Ray's copy of its working directory",
             "run.dir=/shared/runs/tiny")
    assert not (copy / "runs").exists()
    for where in (str(tmp_path / "run"), "s3://bucket/runs/tiny"):
        refuse_a_passing_run_dir(load_config([], [f"run.dir={where}"]))  # kept: no error
    monkeypatch.chdir(tmp_path)
    refuse_a_passing_run_dir(load_config([], ["run.dir=runs/tiny"]))  # an ordinary folder


def test_a_ray_drivers_paths_are_made_absolute_but_uris_and_home_paths_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a relative path names the driver's working directory; a URI and a path from ~ (which
    # every reader of data.path expands to its user's home) are handed on as given
    from dbparallel.training.run_dir import absolute_paths

    monkeypatch.chdir(tmp_path)
    made = absolute_paths(load_config([], ["data.source=parquet", "data.path=data/x"]))
    assert (made.run.dir, made.data.path) == (str(tmp_path / "runs" / "x-dit"),
                                              str(tmp_path / "data" / "x"))
    for run_dir, path in (("s3://bucket/runs/x", "~/data/x"), ("~/runs/x", "gs://bucket/x"),
                          ("file:///runs/x", "s3://bucket/x?endpoint_override=h:9000")):
        kept = absolute_paths(load_config([], ["data.source=parquet", f"data.path={path}",
                                               f"run.dir={run_dir}"]))
        assert (kept.run.dir, kept.data.path) == (run_dir, path)
