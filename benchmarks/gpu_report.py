"""What a gpu_speed result shows: its plot, and the Markdown table the docs quote.

    python benchmarks/gpu_report.py benchmarks/results/gpu_speed_nvidia-h200.json [--plot]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def markdown(result: dict[str, Any]) -> str:
    """The training rows (step time, samples/s, allocator peak, TFLOP/s, MFU, the plan's
    count) and the sampling rows of ``result`` as Markdown tables, each failed or skipped
    row with what happened to it."""
    rows = result["rows"]
    lines = [f"{result['device']}, torch {result['torch']}, CUDA {result.get('cuda')}", "",
             "| configuration | step | samples/s | allocator peak | plan | TFLOP/s | MFU |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["kind"] != "train":
            continue
        if "error" in r or "skipped" in r:
            lines.append(f"| {r['name']} | {_missing(r)} | | | | | |")
            continue
        mfu = f"{r['mfu']:.1%}" if r.get("mfu") is not None else "n/a"
        lines.append(f"| {r['name']} | {r['step_time_s'] * 1e3:.2f} ms | "
                     f"{r['samples_per_s']:,.0f} | {_mib(r.get('peak_allocated_bytes'))} | "
                     f"{_mib(r.get('plan_bytes'))} | {r.get('achieved_tflops') or 0:.1f} | "
                     f"{mfu} |")
    lines += ["", "| sampling | images/s |", "|---|---|"]
    for r in rows:
        if r["kind"] == "sample":
            done = "error" not in r and "skipped" not in r
            rate = f"{r['images_per_s']:,.1f}" if done else _missing(r)
            lines.append(f"| {r['name']} | {rate} |")
    return "\n".join(lines)


def _missing(row: dict[str, Any]) -> str:
    return "skipped" if "skipped" in row else "failed: " + row["error"].replace("|", "/")[:80]


def _mib(n: int | None) -> str:
    return f"{n / 2**20:,.0f} MiB" if n else "n/a"


def plot(result: dict[str, Any], path: Path) -> None:
    """Training samples/s per configuration (MFU on each bar) and sampling images/s."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in result["rows"] if "error" not in r and "skipped" not in r]
    train = [r for r in ok if r["kind"] == "train"]
    sample = [r for r in ok if r["kind"] == "sample"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.35 * max(len(train), 4) + 1.5),
                             gridspec_kw={"width_ratios": [2, 1]})
    for ax, rows, key, label in ((axes[0], train, "samples_per_s", "training samples/s"),
                                 (axes[1], sample, "images_per_s", "sampling images/s")):
        ax.barh([r["name"] for r in rows], [r[key] for r in rows], color="tab:blue")
        ax.invert_yaxis()
        ax.set_xlabel(label)
        for i, r in enumerate(rows):
            if r.get("mfu") is not None:
                ax.text(r[key], i, f" MFU {r['mfu']:.0%}", va="center", fontsize=7)
    missing = len(result["rows"]) - len(ok)
    fig.suptitle(f"{result['device']}, torch {result['torch']}"
                 + (f" ({missing} configurations failed or skipped)" if missing else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("result", help="a gpu_speed JSON result")
    p.add_argument("--plot", action="store_true", help="also draw it beside the JSON (.png)")
    args = p.parse_args()
    result = json.loads(Path(args.result).read_text())
    print(markdown(result))
    if args.plot:
        plot(result, Path(args.result).with_suffix(".png"))


if __name__ == "__main__":
    main()
