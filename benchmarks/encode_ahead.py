"""Decoding one piece ahead in ``data encode`` and ``data reshard data.resize=true``: rows/s
with the next piece decoded on a thread while one is rewritten, against one after the other.

Both commands decode every image on the CPU, then rewrite it: into latents by the user's
encoder (on a GPU in real use), or into a PNG of ``data.image_size``. ``reshard(ahead=True)``
(the commands' way, data/decoded_pieces.py) reads and decodes the next piece while the one
before is rewritten; ``ahead=False`` does one after the other. Three rewrites of the same
Parquet file of JPEG photos are timed, the two ways pair by pair, each the median of repeats:

- ``encode, conv on the CPU``: a small convolutional encoder (4 stride-2 convolutions to
  4 x H/16 x W/16) on this machine's cores, which it shares with the decoding;
- ``encode, another device``: an encoder that waits ``DEVICE_MS`` per image and uses no CPU,
  standing in for one on a GPU (a model of that case, not a GPU measured);
- ``resize to PNG``: ``data.resize=true``, photos of ``SIDE`` pixels stored at half that side.

    python benchmarks/encode_ahead.py [--quick] [--json] [--wait-idle MINUTES]
"""

from __future__ import annotations

import hashlib
import io
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import finish, load_average, machine, parser, settle  # noqa: E402
from dbparallel.config import DataConfig  # noqa: E402
from dbparallel.data.latent_encoding import Encode, LatentEncoder  # noqa: E402
from dbparallel.data.parquet_index import parquet_index  # noqa: E402
from dbparallel.data.reshard import reshard  # noqa: E402

SIDE = 128  # the photos' side
GROUP_ROWS = 64  # rows of each of the source file's row groups
DEVICE_MS = 1.0  # the other device's time per image (1,000 images/s)
BATCH = 32  # the encoder's batch (--batch)


def photos(path: Path, rows: int) -> None:
    """``rows`` JPEG photos of smooth random colour, SIDE pixels square, labels 0-9."""
    rng = np.random.default_rng(0)
    blobs = []
    for _ in range(rows):
        small = rng.integers(0, 256, (SIDE // 8, SIDE // 8, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((SIDE, SIDE), Image.BILINEAR)
        out = io.BytesIO()
        image.save(out, "JPEG", quality=90)
        blobs.append(out.getvalue())
    pq.write_table(pa.table({"image": pa.array(blobs, pa.binary()),
                             "label": pa.array(rng.integers(0, 10, rows))}),
                   path / "train-00000.parquet", row_group_size=GROUP_ROWS)


def conv_encoder() -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for c_in, c_out in [(3, 32), (32, 64), (64, 64), (64, 4)]:
        layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.SiLU()]
    return nn.Sequential(*layers[:-1]).eval()


def device_encoder(images: torch.Tensor) -> torch.Tensor:
    time.sleep(DEVICE_MS / 1000 * len(images))  # no CPU used, as on another device
    return images[:, :, ::16, ::16].clone()


def arms() -> list[tuple[str, DataConfig, Any]]:
    """(name, the data's settings, the rewrite: an encoder, or None for the PNG resize)."""
    full = DataConfig(image_size=SIDE, channels=3, num_classes=10)
    half = DataConfig(image_size=SIDE // 2, channels=3, num_classes=10, resize=True)
    conv = conv_encoder()
    return [("encode, conv on the CPU", full, conv),
            ("encode, another device", full, device_encoder),
            ("resize to PNG", half, None)]


def seconds(source: Path, data: DataConfig, encoder: Any, ahead: bool) -> tuple[float, str]:
    """How long the rewrite took, and a digest of the rows it wrote."""
    with tempfile.TemporaryDirectory() as out:
        index = parquet_index(str(source))
        rewrite = Encode(data, LatentEncoder(encoder, "bench:encoder", "cpu", BATCH)) \
            if encoder is not None else None
        start = time.perf_counter()
        reshard(index, f"{out}/x", 256, resize=data if rewrite is None else None,
                rewrite=rewrite, ahead=ahead)
        took = time.perf_counter() - start
        written = pq.read_table(f"{out}/x").to_pydict()
        return took, hashlib.sha256(pickle.dumps(written)).hexdigest()


def run(quick: bool = False, rows: int | None = None) -> dict[str, Any]:
    rows, repeats = rows or (256 if quick else 1024), 3 if quick else 5
    before = load_average()
    result_rows = []
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp)
        photos(source, rows)
        for name, data, encoder in arms():
            seconds(source, data, encoder, True)  # warm-up: Pillow's plugins, torch's kernels
            times: dict[bool, list[float]] = {True: [], False: []}
            digests = set()
            for _ in range(repeats):  # pair by pair: a slow spell hits both ways
                for ahead in (False, True):
                    took, digest = seconds(source, data, encoder, ahead)
                    times[ahead].append(took)
                    digests.add(digest)
            serial, overlapped = (rows / statistics.median(times[a]) for a in (False, True))
            result_rows.append({"rewrite": name, "rows": rows,
                                "rows_per_s_one_after_the_other": serial,
                                "rows_per_s_decoded_ahead": overlapped,
                                "speedup": overlapped / serial,
                                "same_rows_written": len(digests) == 1})
    return {"rows": result_rows, "repeats": repeats, "quick": quick, "side": SIDE,
            "device_ms_per_image": DEVICE_MS, "batch": BATCH,
            "torch_threads": torch.get_num_threads(), "load_average_before": before,
            "load_average_after": load_average(), "machine": machine()}


def table(result: dict[str, Any]) -> str:
    lines = [f"{'rewrite':<26} {'rows':>5} {'one after the other':>20} {'decoded ahead':>14} "
             f"{'speedup':>8}"]
    for r in result["rows"]:
        lines.append(f"{r['rewrite']:<26} {r['rows']:>5} "
                     f"{r['rows_per_s_one_after_the_other']:>14,.0f} rows/s "
                     f"{r['rows_per_s_decoded_ahead']:>7,.0f} rows/s {r['speedup']:>8.2f}")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    names = [r["rewrite"] for r in result["rows"]]
    x = np.arange(len(names))
    ax.bar(x - 0.2, [r["rows_per_s_one_after_the_other"] for r in result["rows"]], 0.4,
           label="one after the other")
    ax.bar(x + 0.2, [r["rows_per_s_decoded_ahead"] for r in result["rows"]], 0.4,
           label="next piece decoded ahead")
    ax.set_xticks(x, names)
    ax.set_ylabel("rows/s")
    ax.set_title(f"data encode / reshard, {result['side']}px JPEG "
                 f"({result['machine']['cpus']} cores)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    args = parser(__doc__.splitlines()[0], timed=True).parse_args()
    settle(args, "encode_ahead")
    finish("encode_ahead", run(args.quick), args, table, plot)


if __name__ == "__main__":
    main()
