"""Data scale: a training run's peak memory and samples/s per block at 1x, 4x, 16x the rows.

Synthetic class-conditional images (3x64x64 uint8; ``--quick`` 3x16x16) in several Parquet
files, trained on by ``python -m dbparallel train`` in Ray mode, in a subprocess: ``today``
(``--today``, a checkout of de4eceb, which reads the table whole into a materialized Ray
Dataset) and ``streaming`` (this checkout), each with this venv, its checkout as working
directory and first on PYTHONPATH, a fresh ``DBPARALLEL_CACHE`` per run (every run trains the
evaluation's classifier), after one untimed warm-up run per implementation. How a run is
started, checked and metered (peak memory: the summed PSS of its process tree): cli_run.py.
Samples/s per block, the same way for both: runs of S1 and S2 steps give (S2 - S1) x batch /
(wall2 - wall1) from report.json's ``wall_time_s`` (start-up, data loading and evaluation
cancel; blocks train concurrently, each at that rate); a per-block ``samples_per_second`` of
the report is kept as ``report_samples_per_s``. Today's 16x is skipped if its peak,
extrapolated from 1x and 4x, would pass 60% of memory. Rows of an earlier result of the same
setting are kept unless measured again, so parts can be rerun (--impl, --sizes).

    python benchmarks/data_scale.py --today /work/today [--impl today|streaming|both]
        [--quick] [--sizes 1 4 16] [--data-dir DIR] [--json] [--wait-idle MINUTES]
"""

from __future__ import annotations

import datetime
import json
import math
import shutil
import sys
import tempfile
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# psutil as cli_run found it (Ray's vendored copy where none is installed)
from benchmarks.cli_run import check_import, psutil, train  # noqa: E402
from benchmarks.common import RESULTS, finish, machine, mib, parser, settle  # noqa: E402

IMPLS = ("today", "streaming")
CHANNELS, CLASSES, BATCH = 3, 10, 32
MEMORY_SHARE = 0.6  # today's 16x is skipped above this share of the machine's memory


@dataclass(frozen=True)
class Setting:
    base_rows: int
    image_size: int
    patch_size: int
    row_group: int
    steps: tuple[int, int]  # S1, S2
    eval_samples: int
    timeout_s: float


# 2 cores, 3x64x64, 2k rows: 15-20 ms a step, 40 s of fixed cost a run (+-3 s under load)
FULL = Setting(2000, 64, 8, 512, (100, 6100), 20, 900)
QUICK = Setting(128, 16, 4, 64, (4, 16), 10, 300)


def write_images(path: Path, rows: int, size: int, row_group: int, seed: int = 0) -> Path:
    """``rows`` deterministic class-conditional images (uint8, (C, H, W) flattened) with int64
    labels, as several Parquet files in directory ``path``; reused if already complete."""
    done = path.with_name(path.name + ".done")  # beside the directory: readers see only data
    if done.is_file():
        return path
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(40, 215, (CLASSES, CHANNELS, 4, 4))  # one smooth template per class
    templates = coarse.repeat(size // 4, axis=2).repeat(size // 4, axis=3)
    files = max(4, math.ceil(rows / (4 * row_group)))
    for i, n in enumerate(np.diff(np.linspace(0, rows, files + 1).astype(int))):
        file_rng = np.random.default_rng([seed, i])
        labels = file_rng.integers(0, CLASSES, n)
        noise = file_rng.normal(0, 25, (n, CHANNELS, size, size))
        pixels = np.clip(templates[labels] + noise, 0, 255).astype(np.uint8).reshape(n, -1)
        image = pa.FixedSizeListArray.from_arrays(pa.array(pixels.ravel()), pixels.shape[1])
        table = pa.table({"image": image, "label": pa.array(labels, pa.int64())})
        pq.write_table(table, path / f"part-{i:03d}.parquet", row_group_size=row_group)
    done.write_text(json.dumps({"rows": rows, "size": size, "seed": seed}) + "\n")
    return path


def overrides(data: Path, s: Setting, steps: int, run_dir: Path) -> list[str]:
    return ["task=dit", "data.source=parquet", f"data.path={data}",
            f"data.image_size={s.image_size}", f"data.channels={CHANNELS}",
            f"data.num_classes={CLASSES}", "model.blocks=2", "model.depth=2",
            f"model.patch_size={s.patch_size}", f"train.batch_size={BATCH}",
            f"train.steps={steps}", "train.checkpoint_every=100000",
            "train.log_every=25",  # the default; the recipe's 4 adds a round trip every 4 steps
            "sample.steps=2", "sample.per_class=1", f"sample.eval_samples={s.eval_samples}",
            "metrics.port=0", f"run.dir={run_dir}", "run.name=data-scale"]


def train_once(checkout: Path, data: Path, s: Setting, steps: int, work: Path) -> dict[str, Any]:
    """One CLI training run of ``steps`` steps: wall times, peak memory, the command."""
    run_dir = work / f"{checkout.name}-{data.name}-{steps}-{uuid.uuid4().hex[:8]}"
    return {"steps": steps, **train(checkout, ["jobs/tiny_cpu.yaml",
                                               *overrides(data, s, steps, run_dir)],
                                    run_dir, s.timeout_s)}


def measure(impl: str, checkout: Path, data: Path, rows: int, s: Setting,
            work: Path) -> dict[str, Any]:
    """Two runs (S1, S2 steps) of one implementation at one size: a row of the result."""
    row: dict[str, Any] = {"impl": impl, "rows": rows,
                           "data_bytes": rows * CHANNELS * s.image_size ** 2}
    try:
        runs = [train_once(checkout, data, s, steps, work) for steps in s.steps]
    except RuntimeError as err:
        print(f"data_scale: {impl} at {rows} rows failed: {err}", file=sys.stderr)
        return {**row, "error": str(err)}
    (s1, w1), (s2, w2) = [(r["steps"], r["wall_time_s"]) for r in runs]
    rate = (s2 - s1) * BATCH / (w2 - w1) if w2 > w1 else None
    peak = max(r["peak_memory_bytes"] for r in runs)
    print(f"data_scale: {impl} {rows} rows: peak {mib(peak)} MiB, "
          f"{rate or float('nan'):.1f} samples/s per block", file=sys.stderr, flush=True)
    return {**row, "peak_memory_bytes": peak, "samples_per_second_per_block": rate,
            "report_samples_per_s": runs[1]["report_samples_per_s"], "wall_time_s": [w1, w2],
            "process_wall_s": [r["process_wall_s"] for r in runs], "runs": runs,
            "command": runs[1]["command"], "date": today()}


def too_big(rows: list[dict[str, Any]], wanted: int, total: int) -> str | None:
    """Why ``wanted`` rows would not fit (peak extrapolated linearly from the two largest
    measured sizes), or None."""
    done = sorted((r["rows"], r["peak_memory_bytes"]) for r in rows if "peak_memory_bytes" in r)
    if len(done) < 2:
        return None
    (r1, p1), (r2, p2) = done[-2:]
    estimate = p2 + (p2 - p1) / (r2 - r1) * (wanted - r2)
    if estimate <= MEMORY_SHARE * total:
        return None
    return (f"estimated peak {mib(estimate)} MiB (from {r1} and {r2} rows) exceeds "
            f"{MEMORY_SHARE:.0%} of {mib(total)} MiB")


def ratios(rows: list[dict[str, Any]], base_rows: int) -> dict[str, Any]:
    """The targets: streaming peak at 16x / at 1x (<= 1.2) and streaming samples/s per block
    at 1x / today's (>= 0.9); value and target_met None where a measurement is missing."""
    def get(impl: str, multiple: int, key: str) -> float | None:
        hit = [r.get(key) for r in rows if r["impl"] == impl and r["rows"] == multiple * base_rows]
        return hit[0] if hit else None

    def ratio(a: float | None, b: float | None, limit: float, at_most: bool) -> dict[str, Any]:
        value = a / b if a is not None and b else None
        met = None if value is None else (value <= limit if at_most else value >= limit)
        return {"value": value, "target": f"{'<=' if at_most else '>='} {limit}",
                "target_met": met}

    return {"streaming_peak_16x_over_1x": ratio(get("streaming", 16, "peak_memory_bytes"),
                                                get("streaming", 1, "peak_memory_bytes"),
                                                1.2, True),
            "streaming_over_today_samples_per_s_1x": ratio(
                get("streaming", 1, "samples_per_second_per_block"),
                get("today", 1, "samples_per_second_per_block"), 0.9, False)}


def run(impls: list[str], checkouts: dict[str, Path], s: Setting, multiples: list[int],
        data_dir: Path, earlier: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every (implementation, size); rows of ``earlier`` (a result of the same setting) that
    are not measured again are kept."""
    total = psutil.virtual_memory().total
    setting = json.loads(json.dumps({**asdict(s), "batch_size": BATCH, "channels": CHANNELS,
                                     "classes": CLASSES}))
    kept = earlier["rows"] if earlier and earlier.get("setting") == setting else []
    imported = {**(earlier["imported"] if kept else {}),
                **{impl: check_import(checkouts[impl]) for impl in impls}}
    data = {m: write_images(data_dir / f"images-{m * s.base_rows}-{CHANNELS}x{s.image_size}",
                            m * s.base_rows, s.image_size, s.row_group) for m in multiples}
    new: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="data-scale-runs-") as tmp:
        for impl in impls:
            try:  # untimed: cold imports and file caches
                train_once(checkouts[impl], data[multiples[0]], s, s.steps[0], Path(tmp))
            except RuntimeError as err:
                print(f"data_scale: {impl} warm-up failed: {err}", file=sys.stderr)
            for m in multiples:
                n, mine = m * s.base_rows, [r for r in kept + new if r["impl"] == impl]
                reason = too_big(mine, n, total) if impl == "today" else None
                new.append({"impl": impl, "rows": n, "skipped": reason,
                            "data_bytes": n * CHANNELS * s.image_size ** 2} if reason
                           else measure(impl, checkouts[impl], data[m], n, s, Path(tmp)))
    fresh = {(r["impl"], r["rows"]) for r in new}
    rows = sorted([r for r in kept if (r["impl"], r["rows"]) not in fresh] + new,
                  key=lambda r: (IMPLS.index(r["impl"]), r["rows"]))
    return {"rows": rows, "ratios": ratios(rows, s.base_rows), "quick": s == QUICK,
            "setting": setting, "data_dir": str(data_dir), "imported": imported,
            "machine": {**machine(), "memory_total_bytes": total}, "date": today()}


def today() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def table(result: dict[str, Any]) -> str:
    lines = [f"{'impl':<10} {'rows':>7} {'data MiB':>9} {'peak MiB':>10} {'samples/s/blk':>13} "
             f"{'report s/s':>10} {'wall s (S1, S2)':>16}"]
    fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    for r in result["rows"]:
        head = f"{r['impl']:<10} {r['rows']:>7} {mib(r['data_bytes']):>9} "
        if "peak_memory_bytes" not in r:
            lines.append(head + (r.get("skipped") or r.get("error", ""))[:70].replace("\n", " "))
            continue
        lines.append(head + f"{mib(r['peak_memory_bytes']):>10} "
                     f"{fmt(r['samples_per_second_per_block']):>13} "
                     f"{fmt(r['report_samples_per_s']):>10} "
                     f"{'{:.1f}, {:.1f}'.format(*r['wall_time_s']):>16}")
    for key, v in result["ratios"].items():
        lines.append(f"{key}: {'-' if v['value'] is None else format(v['value'], '.3f')} "
                     f"(target {v['target']}, met: {v['target_met']})")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    for ax, key, label in ((axes[0], "peak_memory_bytes", "peak memory of the run, MiB (PSS)"),
                           (axes[1], "samples_per_second_per_block",
                            "samples/s per block (two-run difference)")):
        for impl in IMPLS:
            rows = [r for r in result["rows"] if r["impl"] == impl and r.get(key) is not None]
            ax.plot([r["rows"] for r in rows],
                    [r[key] / (2**20 if key == "peak_memory_bytes" else 1) for r in rows],
                    "o-", label=impl)
        ticks = sorted({r["rows"] for r in result["rows"]})
        ax.set(xscale="log", xlabel="rows", ylabel=label, ylim=(0, None))
        ax.minorticks_off()
        ax.set_xticks(ticks, [f"{n:,}" for n in ticks])
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = parser(__doc__.split("\n")[0], timed=True)
    p.add_argument("--impl", choices=[*IMPLS, "both"], default="both")
    p.add_argument("--today", default="", help="checkout of the code before the data-path "
                   "rewrite (git -C /work/main worktree add /work/today de4eceb)")
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16],
                   help="multiples of the base row count")
    p.add_argument("--data-dir", default="", help="where the Parquet data are written (kept)")
    args = p.parse_args()
    impls = list(IMPLS) if args.impl == "both" else [args.impl]
    today_dir = Path(args.today).resolve() if args.today else ROOT
    if "today" in impls and (today_dir == ROOT or not (today_dir / "dbparallel").is_dir()):
        p.error("--impl today|both needs --today PATH, a checkout of de4eceb (not this one)")
    name = "data_scale_quick" if args.quick else "data_scale"
    previous = (Path(args.out) if args.out else RESULTS) / f"{name}.json"
    earlier = json.loads(previous.read_text()) if previous.is_file() else None
    data_dir = Path(args.data_dir or Path(tempfile.gettempdir()) / "dbparallel-data-scale")
    settle(args, "data_scale")
    checkouts = {"today": today_dir, "streaming": ROOT}
    result = run(impls, {impl: checkouts[impl] for impl in impls},
                 QUICK if args.quick else FULL, args.sizes, data_dir, earlier)
    finish(name, result, args, table, plot)


if __name__ == "__main__":
    main()
