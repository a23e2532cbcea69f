"""data encode and data reshard as Ray tasks on a real local instance: one task per file,
the same files as the single pass, the encoder's own module sent to the tasks, bad rows
named in order and nothing left behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
import torch

from dbparallel.cli import main

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[2]
HANG_S = 300  # a hang guard only, never a timing claim

ENCODER = '''
import os
import time
import torch.nn.functional as F

def encode(images):  # (N, 3, 8, 8) in [0, 1] -> (N, 3, 4, 4); says which process ran it
    with open(os.path.join({folder!r}, f"{{os.getpid()}}.pid"), "w"):
        pass
    return F.avg_pool2d(images, 2) * 4 - 1

def oblong(images):
    return images[:, :, :4, :]

def slow(images):  # says it runs, then takes its time
    with open(os.path.join({folder!r}, f"{{os.getpid()}}.pid"), "w"):
        pass
    time.sleep(3)
    return F.avg_pool2d(images, 2)

def smaller_on_white(images):  # another shape for white images: the last file's
    return F.avg_pool2d(images, 4 if (images == 1).all() else 2)

def blocks(images):  # says it runs, then encodes only after {hang_s} s
    with open(os.path.join({folder!r}, f"{{os.getpid()}}.pid"), "w"):
        pass
    time.sleep({hang_s})
    with open(os.path.join({folder!r}, "encoded"), "w"):
        pass
    return F.avg_pool2d(images, 2)

def fails_on_white(images):
    if (images == 1).flatten(1).all(1).any():
        raise RuntimeError("a white image")
    return F.avg_pool2d(images, 2)
'''
SETTINGS = ["data.image_size=8", "data.channels=3", "data.num_classes=10",
            "data.shard_rows=4"]  # 64 rows to a file: 300 rows make 5 files


def _data(path: Path, bad: tuple[int, ...] = (), white_from: int = 300) -> Path:
    """300 rows of 3x8x8 uint8 pixels in row groups of 50 (null images at ``bad``, white
    ones from row ``white_from`` on)."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (300, 192), dtype=np.uint8)
    pixels[white_from:] = 255
    images = [None if i in bad else row.tolist() for i, row in enumerate(pixels)]
    path.mkdir(parents=True)
    pq.write_table(pa.table({"image": pa.array(images, pa.list_(pa.uint8())),
                             "label": pa.array(rng.integers(0, 10, 300))}),
                   path / "train-0.parquet", row_group_size=50)
    return path


@pytest.fixture()
def encoder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A module ``ray_standin_encoder``, importable here alone (sys.path); the folder where
    its encode leaves a file per process that ran it. The copies of it the tasks were sent
    (in this machine's temporary folder) are removed after the test."""
    ran = tmp_path / "ran"
    ran.mkdir()
    code = tmp_path / "code"
    code.mkdir()
    (code / "ray_standin_encoder.py").write_text(ENCODER.format(folder=str(ran), hang_s=HANG_S))
    monkeypatch.syspath_prepend(str(code))
    monkeypatch.delitem(sys.modules, "ray_standin_encoder", raising=False)  # another test's
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with sent_code_removed():
        yield ran


@contextlib.contextmanager
def sent_code_removed() -> Iterator[None]:
    """Remove the folders of code sent to tasks (data/own_code.py) made meanwhile."""
    folder = Path(tempfile.gettempdir())
    before = set(folder.glob("dbparallel-code-*"))
    try:
        yield
    finally:
        for made in set(folder.glob("dbparallel-code-*")) - before:
            shutil.rmtree(made, ignore_errors=True)


def _address() -> str:
    return f"runtime.address={ray.get_runtime_context().gcs_address}"


def _same_files(one: Path, other: Path) -> None:
    names = sorted(p.name for p in one.iterdir())
    assert names == sorted(p.name for p in other.iterdir())
    for name in names:
        a, b = pq.ParquetFile(one / name), pq.ParquetFile(other / name)
        assert [a.metadata.row_group(g).num_rows for g in range(a.num_row_groups)] == \
            [b.metadata.row_group(g).num_rows for g in range(b.num_row_groups)]
        assert a.read().equals(b.read())


def test_tasks_encode_the_files_the_single_pass_writes(ray_session, tmp_path, encoder,
                                                        capsys) -> None:
    import ray_standin_encoder

    from dbparallel.config import DataConfig
    from dbparallel.data.latent_encoding import Encode, LatentEncoder
    from dbparallel.data.parquet_index import parquet_index
    from dbparallel.data.reshard import reshard

    data = _data(tmp_path / "data")
    here, there = tmp_path / "here", tmp_path / "there"
    single = LatentEncoder(ray_standin_encoder.encode, "encode")
    reshard(parquet_index(str(data)), str(here), 4, rewrite=Encode(
        DataConfig(image_size=8, channels=3, num_classes=10), single))
    assert {p.stem for p in encoder.iterdir()} == {str(os.getpid())}
    for p in encoder.iterdir():
        p.unlink()
    assert main(["data", "encode", str(data), "--encoder", "ray_standin_encoder:encode",
                 "--out", str(there), _address(), *SETTINGS]) == 0
    printed = capsys.readouterr().out
    ran = {int(p.stem) for p in encoder.iterdir()}
    assert ran and os.getpid() not in ran  # encoded by the tasks' worker processes
    assert sorted(p.name for p in there.iterdir()) == [f"train-0000{n}.parquet"
                                                        for n in range(5)]
    _same_files(here, there)
    stats = single.stats  # the parts' sums together are the single pass's
    assert f"mean {stats.mean:.4g}, standard deviation {stats.std:.4g}" in printed
    assert (f"data.latents=true data.channels=3 data.image_size=4 data.num_classes=10 "
            f"data.latent_shift={stats.mean:.6g} data.latent_scale={0.5 / stats.std:.4g} "
            f"(the shift and scale") in printed, printed


def test_bad_rows_of_several_tasks_are_named_in_order_and_nothing_is_left(
        ray_session, tmp_path, encoder, capsys, monkeypatch) -> None:
    data = _data(tmp_path / "data", bad=(250, 70, 10))
    monkeypatch.chdir(tmp_path)
    assert main(["data", "encode", str(data), "--encoder", "ray_standin_encoder:encode",
                 "--out", "latents", _address(), *SETTINGS]) == 2  # a relative --out
    err = capsys.readouterr().err
    named = [line.strip().split(": column")[0] for line in err.splitlines() if ": column" in line]
    where = data / "train-0.parquet"
    assert named == [f"{where} row {r}" for r in (10, 70, 250)], err
    assert not (tmp_path / "latents").exists()
    # an encoder's error too (data without bad rows: once one is met, nothing encodes)
    assert main(["data", "encode", str(_data(tmp_path / "good")), "--encoder",
                 "ray_standin_encoder:oblong", "--out", "latents", _address(),
                 *SETTINGS]) == 2
    err = capsys.readouterr().err
    assert "--encoder ray_standin_encoder:oblong: given images of shape" in err, err
    assert not (tmp_path / "latents").exists()


def test_once_a_bad_row_is_met_no_task_encodes_and_the_rest_only_decode(
        ray_session, tmp_path, encoder, capsys) -> None:
    """Files 0-3 have a bad first row, so their tasks never encode; file 4's encoder blocks
    (for HANG_S). Of any two tasks that run first on the instance's 2 CPUs, one meets a bad
    row and ends: then file 4's task, running or not, is cancelled and its rows only
    decoded, so the command ends without the encoder, naming the bad rows."""
    data = _data(tmp_path / "data", bad=(0, 64, 128, 192))
    out = tmp_path / "latents"
    assert main(["data", "encode", str(data), "--encoder", "ray_standin_encoder:blocks",
                 "--out", str(out), _address(), *SETTINGS]) == 2
    err = capsys.readouterr().err
    where = data / "train-0.parquet"
    named = [line.strip().split(": column")[0] for line in err.splitlines() if ": column" in line]
    assert named == [f"{where} row {r}" for r in (0, 64, 128, 192)], err
    assert not (encoder / "encoded").exists()  # the blocked encoder was stopped
    assert not out.exists()


def test_a_reshard_on_the_cluster_writes_the_single_pass_s_files(ray_session, tmp_path,
                                                                 encoder, capsys) -> None:
    data = _data(tmp_path / "data")
    here, there = tmp_path / "here", tmp_path / "there"
    assert main(["data", "reshard", str(data), "--out", str(here), *SETTINGS]) == 0
    assert main(["data", "reshard", str(data), "--out", str(there), _address(),
                 *SETTINGS]) == 0
    _same_files(here, there)
    assert "train: 300 rows in 75 row groups of at most 4 rows" in capsys.readouterr().out


def test_a_task_that_fails_stops_the_others_and_every_file_goes(ray_session, tmp_path,
                                                                 encoder) -> None:
    data = _data(tmp_path / "data", white_from=260)  # only the last file's task fails
    out = tmp_path / "latents"
    with pytest.raises(RuntimeError, match="a white image"):
        main(["data", "encode", str(data), "--encoder", "ray_standin_encoder:fails_on_white",
              "--out", str(out), _address(), *SETTINGS])
    assert not out.exists()
    out.mkdir()  # a folder of the user's stays, empty
    with pytest.raises(RuntimeError, match="a white image"):
        main(["data", "encode", str(data), "--encoder", "ray_standin_encoder:fails_on_white",
              "--out", str(out), _address(), *SETTINGS])
    assert out.is_dir() and list(out.iterdir()) == []


def test_a_file_the_driver_cannot_see_stops_it_and_is_removed_where_it_was_written(
        ray_session, tmp_path, encoder, capsys, monkeypatch) -> None:
    """As on a cluster whose --out is no shared folder: the driver does not see the second
    file (its check is made to miss it); a task on every node removes every file there."""
    from dbparallel.runtime import rewrite_ray

    seen = rewrite_ray.visible
    monkeypatch.setattr(rewrite_ray, "visible",
                        lambda out, name: name != "train-00001.parquet" and seen(out, name))
    removed = []
    real_remove = rewrite_ray._remove_on
    monkeypatch.setattr(rewrite_ray, "_remove_on", lambda nodes, out, names: (
        removed.append(names), real_remove(nodes, out, names)))
    out = tmp_path / "latents"
    assert main(["data", "reshard", str(_data(tmp_path / "data")), "--out", str(out),
                 _address(), *SETTINGS]) == 2
    err = capsys.readouterr().err
    assert f"--out {out}: a task wrote train-00001.parquet on another node" in err, err
    assert removed == [[f"train-0000{n}.parquet" for n in range(5)]] and not out.exists()


def test_a_program_s_own_function_encodes_on_the_instance_it_joined(ray_session, tmp_path,
                                                                    encoder) -> None:
    """dbparallel.encode in a process that joined Ray: the function (a closure over a
    module with weights) is sent to the tasks with what it holds."""
    import torch

    import dbparallel

    conv = torch.nn.Conv2d(3, 2, 2, stride=2)
    ran = encoder

    def encode(images: torch.Tensor) -> torch.Tensor:
        (ran / f"{os.getpid()}.pid").touch()
        return conv(images)

    data = _data(tmp_path / "data")
    settings = dict(item.split("=") for item in SETTINGS)
    got = dbparallel.encode(data, encode, tmp_path / "there", overrides=settings)
    pids = {int(p.stem) for p in ran.iterdir()}
    assert pids and os.getpid() not in pids
    assert got["files"] == [f"train-0000{n}.parquet" for n in range(5)]
    assert got["shape"] == [2, 4, 4] and got["rows"] == {"train": 300}
    with torch.no_grad():
        pixels = pq.read_table(data / "train-0.parquet").column("image").to_pylist()
        want = conv(torch.tensor(pixels, dtype=torch.float32).reshape(-1, 3, 8, 8) / 255)
    written = pq.read_table(tmp_path / "there").column("image").to_pylist()
    np.testing.assert_allclose(np.array(written, np.float32),  # float16 as stored
                               want.reshape(300, -1).numpy(), rtol=2e-3, atol=1e-3)


def test_ctrl_c_stops_the_tasks_and_leaves_nothing(ray_session, tmp_path, encoder) -> None:
    """A driver joined to the cluster (another process, as `ray job submit` starts one) is
    interrupted while the tasks encode: it exits 130, cancels them (their worker processes
    end) and removes what they wrote."""
    data, out = _data(tmp_path / "data"), tmp_path / "latents"
    code = str(tmp_path / "code")
    log = tmp_path / "stderr"
    with open(log, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dbparallel", "data", "encode", str(data), "--encoder",
             "ray_standin_encoder:slow", "--out", str(out), _address(), *SETTINGS],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr,
            env={**os.environ, "PYTHONPATH": f"{code}:{ROOT}"},
            # Ctrl-C's default: a suite run in the background hands its children SIGINT
            # ignored, which the command keeps ignoring, as a shell's background job should
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + HANG_S
        while not list(encoder.iterdir()) and proc.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list(encoder.iterdir()), (proc.poll(), log.read_text()[-3000:])
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=HANG_S) == 130, log.read_text()[-3000:]
    finally:
        proc.kill()
        proc.wait()
    assert not out.exists()
    workers = {int(p.stem) for p in encoder.iterdir()}
    deadline = time.monotonic() + HANG_S
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in workers)  # cancelled: the tasks' processes ended


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"  # not a zombie either


def test_a_cluster_without_a_gpu_refuses_device_cuda_and_leaves_no_out(
        ray_session, tmp_path, encoder, capsys) -> None:
    out = tmp_path / "latents"
    assert main(["data", "encode", str(_data(tmp_path / "data")), "--encoder",
                 "ray_standin_encoder:encode", "--device", "cuda", "--out", str(out),
                 _address(), *SETTINGS]) == 2
    assert "--device: the Ray cluster has no GPU" in capsys.readouterr().err
    assert not out.exists()


def test_a_function_of_the_program_s_own_module_encodes_on_the_instance_it_joined(
        ray_session, tmp_path, encoder) -> None:
    """The function object (not its "module:function") of a module importable here alone:
    the tasks' workers cannot import it, so its module goes with it."""
    import ray_standin_encoder

    import dbparallel

    settings = dict(item.split("=") for item in SETTINGS)
    got = dbparallel.encode(_data(tmp_path / "data"), ray_standin_encoder.encode,
                            tmp_path / "there", overrides=settings)
    assert got["files"] == [f"train-0000{n}.parquet" for n in range(5)]
    pids = {int(p.stem) for p in encoder.iterdir()}
    assert pids and os.getpid() not in pids



def test_every_file_a_node_wrote_goes_where_the_driver_sees_none(ray_session, tmp_path,
                                                                  encoder, capsys,
                                                                  monkeypatch) -> None:
    """--out on each node's own disk: the driver sees no file of the tasks'. By the time the
    first is found missing the others are written (or being written) there too: every
    node is asked to remove every file."""
    from dbparallel.runtime import rewrite_ray

    out = tmp_path / "latents"

    def unseen(where: str, name: str) -> bool:  # once every task has written its file
        deadline = time.monotonic() + HANG_S
        while len(list(out.glob("*.parquet"))) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        return False

    monkeypatch.setattr(rewrite_ray, "visible", unseen)
    asked = []
    real_remove = rewrite_ray._remove_on
    monkeypatch.setattr(rewrite_ray, "_remove_on", lambda nodes, where, names: (
        asked.append((sorted(nodes), names)), real_remove(nodes, where, names)))
    assert main(["data", "reshard", str(_data(tmp_path / "data")), "--out", str(out),
                 _address(), *SETTINGS]) == 2
    assert "on another node, which this machine does not see" in capsys.readouterr().err
    nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
    assert asked == [(nodes, [f"train-0000{n}.parquet" for n in range(5)])]
    assert not out.exists()


class _Counted:
    """An encoder (a model that holds weights) that counts the times it is pickled here."""

    pickled = 0

    def __call__(self, images):
        import torch.nn.functional as F

        return F.avg_pool2d(images, 2)

    def __reduce__(self):
        type(self).pickled += 1
        return (_Counted, ())


def test_the_encoder_is_pickled_once_for_every_task(ray_session, tmp_path, encoder) -> None:
    """Its weights are put into the object store once, not once per task (a thousand files
    of a VAE's weights would fill it)."""
    import dbparallel

    settings = dict(item.split("=") for item in SETTINGS)
    _Counted.pickled = 0
    got = dbparallel.encode(_data(tmp_path / "data"), _Counted(), tmp_path / "there",
                            overrides=settings)
    assert len(got["files"]) == 5 and got["shape"] == [3, 4, 4]
    assert _Counted.pickled == 1


def test_latents_of_another_shape_in_another_task_leave_nothing(ray_session, tmp_path,
                                                                 encoder, capsys) -> None:
    """Each task checks the shape of its own latents; the shapes of all, once they have
    ended, before the files are kept."""
    out = tmp_path / "latents"
    assert main(["data", "encode", str(_data(tmp_path / "data", white_from=256)),
                 "--encoder", "ray_standin_encoder:smaller_on_white", "--out", str(out),
                 _address(), *SETTINGS]) == 2
    assert "it returned latents of different shapes (C', H', W') in different parts" in \
        capsys.readouterr().err
    assert not out.exists()


def test_a_module_missing_on_a_node_is_named_not_a_traceback(ray_session, tmp_path,
                                                             monkeypatch) -> None:
    """As for a function of an installed package that a node lacks: the function is sent by
    name (its module, importable here alone, is taken for installed code) and the tasks
    cannot import it. (A module of its own: the session's workers hold others' code.)"""
    import importlib

    import dbparallel
    from dbparallel.data import own_code
    from dbparallel.errors import UserError

    code = tmp_path / "site"
    code.mkdir()
    (code / "installed_here_only.py").write_text(
        "import torch.nn.functional as F\n"
        "def encode(images):\n    return F.avg_pool2d(images, 2)\n")
    monkeypatch.syspath_prepend(str(code))
    module = importlib.import_module("installed_here_only")
    monkeypatch.setattr(own_code, "own_modules", lambda function: ())
    out = tmp_path / "latents"
    settings = dict(item.split("=") for item in SETTINGS)
    with pytest.raises(UserError, match="no module named 'installed_here_only' on its node; "
                                        "an installed package must be installed on every node"):
        dbparallel.encode(_data(tmp_path / "data"), module.encode, out, overrides=settings)
    assert not out.exists()


def test_a_bad_device_is_named_on_the_cluster_as_in_this_process(ray_session, tmp_path,
                                                                 encoder, capsys) -> None:
    """In a process that joined Ray, dbparallel.encode runs on the cluster: a device that is
    no string (0 would be read as cuda:0) or a GPU's number is named there too, naming the
    program's device= (a command's --device), before anything is written."""
    import dbparallel
    from dbparallel.errors import UserError

    data, out = _data(tmp_path / "data"), tmp_path / "latents"
    cases = [(0, r"^device: expected cpu, cuda or cuda:N \(a string\), got int 0$"),
             (torch.device("cuda:1"), r"^device='cuda:1': on a Ray cluster each task of data "
                                      r"encode takes a GPU of its own; give device='cuda'$"),
             ("tpu", r"^device='tpu': expected cpu or cuda$")]
    for device, match in cases:
        with pytest.raises(UserError, match=match):
            dbparallel.encode(data, torch.nn.Identity(), out, SETTINGS, device=device)
        assert not out.exists()
    assert main(["data", "encode", str(data), "--encoder", "ray_standin_encoder:encode",
                 "--out", str(out), "--device", "cuda:1", _address(), *SETTINGS]) == 2
    assert "--device cuda:1: on a Ray cluster each task of data encode takes a GPU of its " \
           "own; give --device cuda" in capsys.readouterr().err
    assert not out.exists()
