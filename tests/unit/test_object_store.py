"""Run directories in an object store: a real S3-compatible server (moto) on localhost."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from dbparallel.cli import main
from dbparallel.training.checkpoint import BlockCheckpoints
from dbparallel.training.storage import Storage

TINY = str(Path(__file__).resolve().parents[2] / "jobs" / "tiny_cpu.yaml")


def test_storage_round_trip_and_atomic_overwrite(bucket) -> None:
    storage = Storage(bucket("unit"))
    storage.write_json("a/b.json", {"x": 1})
    storage.write_json("a/b.json", {"x": 2})
    assert storage.read_json("a/b.json") == {"x": 2}
    assert storage.exists("a/b.json") and not storage.exists("a/c.json")
    storage.delete("a/b.json")
    assert not storage.exists("a/b.json")


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_file_removed_between_a_look_and_a_delete_is_no_error(bucket, tmp_path,
                                                                 where) -> None:
    """Two processes deleting one file: the second sees it, then finds it gone."""
    storage = Storage(bucket("gone") if where == "s3" else str(tmp_path))
    storage.write_json("a.json", {})
    other = Storage(storage.root)

    class Raced(Storage):
        def exists(self, rel: str) -> bool:
            found = super().exists(rel)
            other.fs.delete_file(other.path(rel))  # the other process's delete, just after
            return found

    Raced(storage.root).delete("a.json")
    assert not storage.exists("a.json")


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_listing_cut_short_by_another_process_is_no_error(bucket, tmp_path,
                                                             where) -> None:
    """Two replicas of a block start in one directory: the writer's files come and go as the
    other lists the block's folder. pyarrow's listing failed ("Cannot list directory ...:
    No such file or directory"); a local folder is listed by name alone, and a listing that
    finds its folder gone holds nothing."""
    storage = Storage(bucket("listed") if where == "s3" else str(tmp_path))
    storage.write_json("blocks/block_1/lease.json", {})

    class Racing:
        def __getattr__(self, name):
            return getattr(storage.fs.__class__, name)

        def get_file_info(self, selector):
            raise FileNotFoundError(f"Cannot list directory '{selector.base_dir}'. Detail: "
                                    f"[errno 2] No such file or directory")

    fs, storage.fs = storage.fs, Racing()
    try:
        assert storage.listdir("blocks/block_1") == (["lease.json"] if where == "local"
                                                      else [])
    finally:
        storage.fs = fs


def test_an_object_read_as_it_is_rewritten_is_read_whole(bucket) -> None:
    """A lease or record renewed by its process while another reads it: pyarrow.fs learns the
    object's size, then reads that many bytes, so a rewrite of another length in between came
    back cut short or running into the next version (about one read in ten here, while a
    writer rewrote it without a pause). Every read is one whole version: leases and records
    are JSON, read with read_json."""
    storage = Storage(bucket("rewritten"))
    versions = [{"step": 1, "pad": "x" * 200}, {"step": 2, "pad": "y" * 20}]
    storage.write_json("lease.json", versions[0])
    done, torn = threading.Event(), []

    def rewrite() -> None:
        i = 0
        while not done.is_set():
            i += 1
            storage.write_json("lease.json", versions[i % 2])

    writer = threading.Thread(target=rewrite, daemon=True)
    writer.start()
    try:
        for _ in range(300):
            value = storage.read_json("lease.json")
            if value not in versions:
                torn.append(value)
    finally:
        done.set()
        writer.join()
    assert not torn, f"{len(torn)} of 300 reads were torn, e.g. {torn[0]!r}"


class _RewrittenTwice(BaseHTTPRequestHandler):
    """An object store holding ``runs/lease.json``, rewritten between a reader's requests:
    the n-th request (HEAD or GET) sees ``versions[seen[n]]``, the last one thereafter. A
    read is a HEAD for the size, then a GET of that many bytes, then ``read_bytes``' HEAD
    to compare the sizes."""

    versions: list[bytes] = []
    seen: list[int] = []
    requests = 0

    def _version(self) -> bytes:
        cls = type(self)
        n, cls.requests = cls.requests, cls.requests + 1
        return cls.versions[cls.seen[min(n, len(cls.seen) - 1)]]

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self._version())))
        self.send_header("Last-Modified", "Fri, 04 Dec 2026 00:00:00 GMT")
        self.end_headers()

    def do_GET(self) -> None:
        body = self._version()
        first, last = self.headers["Range"].removeprefix("bytes=").split("-")
        part = body[int(first):int(last) + 1]
        self.send_response(206)
        self.send_header("Content-Length", str(len(part)))
        self.send_header("Content-Range", f"bytes {first}-{int(first) + len(part) - 1}/{len(body)}")
        self.end_headers()
        self.wfile.write(part)

    def log_message(self, *args) -> None:
        pass


def test_a_json_object_rewritten_back_to_the_size_read_is_read_again(monkeypatch) -> None:
    """The short version's size, then a GET of that many bytes of the long version, then the
    short version's size again: the sizes agree, and the bytes are the long version cut
    short. read_json reads again and returns the short version whole."""
    short, long = (json.dumps({"step": s, "pad": p}).encode() + b"\n"
                   for s, p in ((2, "y" * 20), (1, "x" * 200)))
    _RewrittenTwice.versions, _RewrittenTwice.seen = [short, long], [0, 1, 0]
    _RewrittenTwice.requests = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RewrittenTwice)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    host, port = server.server_address[:2]
    try:
        storage = Storage(f"s3://runs?endpoint_override={host}:{port}&scheme=http"
                          "&region=us-east-1")
        assert storage.read_bytes("lease.json") == long[:len(short)]  # torn, sizes agree
        _RewrittenTwice.requests = 0
        assert storage.read_json("lease.json") == {"step": 2, "pad": "y" * 20}
        assert _RewrittenTwice.requests == 6  # two reads of three requests
    finally:
        server.shutdown()
        server.server_close()


def test_a_file_is_named_before_the_uri_query() -> None:
    """A run directory's file is named where it is, so a message that names it (a damaged
    manifest, a file to delete) gives a URI that reads it back."""
    query = "?endpoint_override=127.0.0.1:9&scheme=http&region=us-east-1"
    storage = Storage(f"s3://runs/x/{query}")
    assert storage.uri("blocks/block_0/manifest.json") == \
        f"s3://runs/x/blocks/block_0/manifest.json{query}"
    assert storage.uri() == f"s3://runs/x{query}"
    assert Storage(storage.uri("report.json")).path("") == storage.path("report.json")
    assert Storage("mock:///runs/x/").uri("report.json") == "mock:///runs/x/report.json"


@pytest.fixture
def unreachable(monkeypatch) -> str:
    """A run directory URI whose endpoint no server listens on (a port just released)."""
    import socket

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"s3://runs/x?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"


SLOW = pytest.mark.slow  # the S3 client's own retries: 6 s a command


@pytest.mark.parametrize("command", [
    ["status"], pytest.param(["plot"], marks=SLOW),
    pytest.param(["export", "--out", "{tmp}/x.safetensors"], marks=SLOW),
    pytest.param(["eval"], marks=SLOW), pytest.param(["stop"], marks=SLOW),
    ["train", TINY, "--local", "run.dir={uri}"],
    pytest.param(["train", TINY, "--local", "data.validate=false", "run.dir={uri}"], marks=SLOW),
    pytest.param(["plot", "{tmp}", "--against"], marks=SLOW)])
def test_an_object_store_that_cannot_be_reached_is_named(command, unreachable, tmp_path,
                                                         capsys) -> None:
    """A run directory whose store does not answer is one line naming it, exit code 2, in
    every command that reads one (not the traceback of its first read)."""
    args = [a.format(tmp=tmp_path, uri=unreachable) for a in command]
    if "run.dir={uri}" not in command:
        args.append(unreachable)
    if args[0] == "plot" and "--against" in args:  # a run here, the other one out of reach
        assert main(["train", TINY, "--local", f"run.dir={tmp_path}", "train.steps=2",
                     "metrics.port=0"]) == 0
        capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "cannot be reached" in err and "127.0.0.1" in err and "Traceback" not in err


def test_a_bucket_this_process_may_read_but_not_write_is_named(bucket, monkeypatch,
                                                                capsys) -> None:
    """Without credentials (a job on a cluster whose nodes were given none) the store answers
    reads and refuses the run's first write: one line naming run.dir, exit code 2."""
    uri = bucket("no-keys")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance profile to ask
    assert main(["train", TINY, "--local", f"run.dir={uri}", "data.validate=false"]) == 2
    err = capsys.readouterr().err
    assert f"run.dir={uri}: cannot write in the run directory (" in err
    assert "ACCESS_DENIED" in err and "Traceback" not in err


def test_train_resume_and_corruption_through_s3(bucket, tmp_path, capsys) -> None:
    def train(run_dir: str, *extra: str) -> int:
        return main(["train", TINY, "--local", f"run.dir={run_dir}", *extra])

    local = tmp_path / "local"
    assert train(str(local)) == 0
    uri = bucket("tiny")
    assert train(uri, "train.steps=6") == 0
    storage = Storage(uri)
    run_id = storage.read_json("report.json")["run_id"]  # drawn once, in the bucket
    assert train(uri) == 0  # resumes from the object store at step 6
    remote = storage.read_json("report.json")
    assert remote["run_id"] == run_id == storage.read_text("run_id.txt").strip()
    clean = json.loads((local / "report.json").read_text())
    assert [r["resumed_from"] for r in remote["per_block"]] == [6, 6]  # not retrained
    assert [r["final_loss"] for r in remote["per_block"]] == \
        [r["final_loss"] for r in clean["per_block"]]
    capsys.readouterr()
    assert main(["status", uri, "--json"]) == 0  # read from the bucket alone
    status = json.loads(capsys.readouterr().out)
    assert status["state"] == "finished" and status["report_age_s"] is not None
    assert status["run_id"] == run_id
    assert [b["checkpoint_step"] for b in status["blocks"]] == \
        [r["steps"] for r in remote["per_block"]]
    assert main(["plot", uri]) == 0  # the file it names is the one written, before the query
    assert capsys.readouterr().out == f"wrote {bucket('tiny/curves.png')}\n"
    assert Storage(bucket("tiny/curves.png")).read_bytes("")[:4] == b"\x89PNG"
    # A torn latest checkpoint in the bucket: the previous good one is used.
    ckpt = BlockCheckpoints(storage, 0)
    latest = ckpt.manifest()["state"][-1]["file"]
    storage.write_bytes(latest, storage.read_bytes(latest)[:64])
    assert ckpt.load_latest("state")["step"] == 6


def test_training_data_streamed_from_a_bucket(bucket, tmp_path) -> None:
    """A directory of Parquet files in the bucket trains like the same files on disk."""
    import numpy as np
    import pyarrow.parquet as pq

    from dbparallel.data.tables import image_table

    rng = np.random.default_rng(0)
    table = image_table(rng.random((300, 1, 8, 8), dtype=np.float32), rng.integers(0, 10, 300))
    data = bucket("data/digits")
    fs, root = pafs.FileSystem.from_uri(data)
    local = tmp_path / "data"
    local.mkdir()
    for i in range(3):
        part = table.slice(i * 100, 100)
        pq.write_table(part, f"{root}/part-{i}.parquet", filesystem=fs, row_group_size=50)
        pq.write_table(part, local / f"part-{i}.parquet", row_group_size=50)
    reports = []
    for path, run in ((data, "s3run"), (str(local), "localrun")):
        assert main(["train", TINY, "--local", f"run.dir={tmp_path / run}", "metrics.port=0",
                     "data.source=parquet", f"data.path={path}"]) == 0
        reports.append(json.loads((tmp_path / run / "report.json").read_text()))
    assert [r["final_loss"] for r in reports[0]["per_block"]] == \
        [r["final_loss"] for r in reports[1]["per_block"]]


def test_export_to_and_load_from_a_bucket(bucket) -> None:
    """A run directory and its export in the bucket load to the same network."""
    import torch

    import dbparallel

    run = bucket("exported")
    assert main(["train", TINY, "--local", f"run.dir={run}", "train.steps=4",
                 "train.checkpoint_every=4", "metrics.port=0"]) == 0
    out = bucket("exports/tiny.safetensors")  # the endpoint rides in the URI's query
    assert main(["export", run, "--out", out]) == 0
    a, b = dbparallel.load(run), dbparallel.load(out)
    assert b.steps == a.steps == [4, 4]
    assert torch.equal(a.sample([1, 2], steps=2), b.sample([1, 2], steps=2))
    for command in ("plot", "sample"):  # --out a URI, with its query: written there
        png = bucket(f"out/{command}.png")
        assert main([command, run, "--out", png]) == 0
        assert Storage(png).read_bytes("")[:4] == b"\x89PNG"


class _Refusing(BaseHTTPRequestHandler):
    """An object store that answers every request 403 Access Denied."""

    def _refuse(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))  # curl sends it whole
        self.send_response(403)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _refuse

    def log_message(self, *args) -> None:
        pass


def test_a_block_s_error_is_raised_while_its_run_directory_is_out_of_reach(
        s3_server, bucket, caplog) -> None:
    """The object store of the run directory goes out of reach while a block trains, and the
    block then meets an error of its own (here a non-finite loss): that error is the one
    raised, not the store's met recording it or releasing the block's lease, which are
    warnings. The store refuses every request (as once its credentials are revoked): a
    stopped server gives the same errors, each after 6 s of pyarrow's retries."""
    from dbparallel.config import load_config
    from dbparallel.data.sources import open_data
    from dbparallel.training.block_trainer import NonFiniteLoss
    from dbparallel.training.loop import BlockRun

    cfg = load_config([TINY], [f"run.dir={bucket('gone')}", "train.steps=4", "train.lr=1e30",
                               "train.nonfinite=stop", "train.heldout_every=0"])
    run = BlockRun(cfg, 1, open_data(cfg.data), Storage(cfg.run_dir), prefetch=False)
    s3_server.stop()  # no line or checkpoint is due before the loss of step 2 is inf
    refusing = ThreadingHTTPServer(s3_server.get_host_and_port(), _Refusing)
    threading.Thread(target=refusing.serve_forever, daemon=True).start()
    with pytest.raises(NonFiniteLoss, match="loss is inf taking step 2"):
        try:
            run.train_until(4)
        finally:
            run.close()  # as a local run closes it
            refusing.shutdown()
            refusing.server_close()
    assert "block 1: could not record its failure in the run directory" in caplog.text
    assert "block 1: could not release its write lease" in caplog.text
