"""Reading one Parquet row group from an object store with a round-trip time: three ways.

An S3-compatible server (moto, on this machine) sits behind a proxy that delays every request
by ``--rtt-ms`` and caps each connection's download rate (``--mbps``), a stand-in for an
object store across a network. One row group of uint8 image lists is read three ways, each
in a fresh process:

- ``whole``: ``ParquetFile.read_row_group`` (Arrow's read-ahead on: the columns' bytes fetched
  in parallel, then decoded at once);
- ``pieces``: batches of about 1 MiB decoded (data/row_groups.py), the file read through an
  8 MiB buffer as it is decoded, read-ahead off (one request after another): how a block
  reads a local file;
- ``pieces, read-ahead``: the same batches with read-ahead on (the row group's bytes fetched
  first, in concurrent ranged requests, then decoded a piece at a time): how a block reads
  from an object store.

Per arm: seconds (median of repeats), Arrow's peak memory, and what the read adds to the
process's resident memory at its peak (Linux: VmHWM, reset before the read, less VmRSS).

    python benchmarks/object_store_read.py [--quick] [--json] [--rtt-ms MS] [--mbps MB_S]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    ReadMemory,
    finish,
    fresh_runs,
    load_average,
    machine,
    parser,
    s3_server,
    settle,
)

ARMS = ("whole", "pieces", "pieces, read-ahead")
ROW_PIXELS = 3 * 64 * 64


class SlowLink:
    """A TCP proxy to ``target``: each chunk a client sends waits ``rtt`` seconds before it is
    passed on, and each connection downloads at most ``rate`` bytes a second."""

    def __init__(self, target: tuple[str, int], rtt: float, rate: float):
        self.target, self.rtt, self.rate = target, rtt, rate
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.port = 0

        def serve() -> None:
            asyncio.set_event_loop(self.loop)
            server = self.loop.run_until_complete(
                asyncio.start_server(self._client, "127.0.0.1", 0))
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            self.loop.run_forever()

        threading.Thread(target=serve, daemon=True).start()
        ready.wait()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)

        async def upload() -> None:
            while data := await reader.read(65536):
                await asyncio.sleep(self.rtt)
                up_writer.write(data)
                await up_writer.drain()
            up_writer.close()

        async def download() -> None:
            while data := await up_reader.read(65536):
                await asyncio.sleep(len(data) / self.rate)
                writer.write(data)
                await writer.drain()
            writer.close()

        await asyncio.gather(upload(), download(), return_exceptions=True)


def one(arm: str, uri: str) -> dict[str, Any]:
    """Read row group 0 of ``uri`` by ``arm`` in this process (a fresh one per call)."""
    from dbparallel.data import row_groups
    from dbparallel.data.tables import resolve_path

    fs, path = resolve_path(uri)
    memory = ReadMemory()
    start = time.perf_counter()
    rows = 0
    with fs.open_input_file(path) as f:
        if arm == "whole":
            rows = pq.ParquetFile(f).read_row_group(0, columns=["image", "label"]).num_rows
        else:
            ahead = arm == "pieces, read-ahead"
            for batch in row_groups.row_group_batches(f, 0, ["image", "label"],
                                                      read_ahead=ahead):
                rows += batch.num_rows
    return {"rows": rows, "seconds": time.perf_counter() - start, **memory.result()}


def run(quick: bool = False, rtt_ms: float = 20.0, mbps: float = 100.0) -> dict[str, Any]:
    import pyarrow.fs as pafs

    repeats = 1 if quick else 3
    group_mib = 8 if quick else 64
    before = load_average()
    with s3_server("data") as (host, port):
        rows = (group_mib << 20) // ROW_PIXELS
        rng = np.random.default_rng(0)
        pixels = rng.integers(0, 256, (rows, ROW_PIXELS), dtype=np.uint8)
        table = pa.table({
            "image": pa.FixedSizeListArray.from_arrays(pa.array(pixels.ravel()), ROW_PIXELS),
            "label": pa.array(rng.integers(0, 10, rows))})
        direct = pafs.S3FileSystem(endpoint_override=f"{host}:{port}", scheme="http",
                                   region="us-east-1")
        pq.write_table(table, "data/group.parquet", filesystem=direct, row_group_size=rows)
        link = SlowLink((host, port), rtt_ms / 1000, mbps * 1e6)
        uri = (f"s3://data/group.parquet?endpoint_override=127.0.0.1:{link.port}"
               f"&scheme=http&region=us-east-1")
        out = []
        for arm in ARMS:
            runs = fresh_runs(__file__, [arm, uri], repeats)
            out.append({"arm": arm, "rows": runs[0]["rows"], "row_group_mib": group_mib,
                        "seconds": statistics.median(r["seconds"] for r in runs),
                        "arrow_peak_bytes": max(r["arrow_peak_bytes"] for r in runs),
                        "process_peak_bytes": max(r["process_peak_bytes"] for r in runs)})
    return {"rows": out, "rtt_ms": rtt_ms, "mbps_per_connection": mbps, "repeats": repeats,
            "quick": quick, "load_average_before": before, "load_average_after": load_average(),
            "machine": machine()}


def table(result: dict[str, Any]) -> str:
    lines = [f"rtt {result['rtt_ms']:g} ms, {result['mbps_per_connection']:g} MB/s per "
             f"connection",
             f"{'arm':<20} {'MiB':>4} {'seconds':>8} {'Arrow MiB':>10} {'+RSS MiB':>9}"]
    for r in result["rows"]:
        lines.append(f"{r['arm']:<20} {r['row_group_mib']:>4} {r['seconds']:>8.2f} "
                     f"{r['arrow_peak_bytes'] / 2**20:>10,.1f} "
                     f"{r['process_peak_bytes'] / 2**20:>9,.0f}")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, (sec, mem) = plt.subplots(1, 2, figsize=(9, 3.5))
    names = [r["arm"] for r in result["rows"]]
    sec.bar(names, [r["seconds"] for r in result["rows"]])
    x = range(len(names))
    mem.bar([i - 0.2 for i in x], [r["arrow_peak_bytes"] / 2**20 for r in result["rows"]],
            0.4, label="Arrow's peak")
    mem.bar([i + 0.2 for i in x], [r["process_peak_bytes"] / 2**20 for r in result["rows"]],
            0.4, label="added to the process")
    mem.set_xticks(list(x), names)
    mem.legend()
    sec.set_ylabel("seconds")
    mem.set_ylabel("MiB")
    fig.suptitle(f"One {result['rows'][0]['row_group_mib']} MiB row group from an object store "
                 f"({result['rtt_ms']:g} ms, {result['mbps_per_connection']:g} MB/s a connection)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    if sys.argv[1:2] == ["--one"]:
        print(json.dumps(one(sys.argv[2], sys.argv[3])))
        return
    p = parser(__doc__.splitlines()[0], timed=True)
    p.add_argument("--rtt-ms", type=float, default=20.0)
    p.add_argument("--mbps", type=float, default=100.0)
    args = p.parse_args()
    settle(args, "object_store_read")
    finish("object_store_read", run(args.quick, args.rtt_ms, args.mbps), args, table, plot)


if __name__ == "__main__":
    main()
