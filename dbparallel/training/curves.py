"""curves.png of a run: each block's training and held-out loss over its steps, where
assemblies ran the composed network's metrics over training (from the files of
training/history.py) and, after the final assembly, its loss per noise level by block
(diagnostics.json), against an end-to-end run's when one is given."""

from __future__ import annotations

import io
import logging
import math
from typing import Any

from dbparallel.errors import RunDirError
from dbparallel.training.history import read_assemblies, read_history
from dbparallel.training.storage import Storage

CURVES_FILE = "curves.png"
NOT_METRICS = ("step", "wall_s")  # assembly.jsonl keys that are not the network's metrics
# assembly metrics that do not change over training (whether the test split was scored, how
# many rows or samples were scored, BPE's characters per token of the held-out rows, the
# looped task's memory measurements): no panel of their own
CONSTANT = ("eval_on_test", "eval_rows", "fid_samples", "chars_per_token")
CONSTANT_PARTS = ("_bytes",)
# the data's own value, drawn as a dashed line in the panel of the network's metric (the
# in-domain classifier's accuracy on real held-out images beside its accuracy on samples)
REFERENCES = {"data_ppl": "gen_ppl", "data_entropy": "sample_entropy",
              "classifier_accuracy": "sample_accuracy"}
PANEL_COLUMNS = 4  # assembly panels per row
log = logging.getLogger(__name__)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def plot_curves(storage: Storage, against: Storage | None = None) -> bytes:
    """The PNG of the run in ``storage`` (with ``against``'s diagnostics, e.g. the
    end-to-end baseline's, beside its own); RunDirError if no block has written its history."""
    history = read_history(storage)
    if not history:
        raise RunDirError(f"{storage.uri()}: no training history yet (each block writes "
                          f"blocks/block_<b>/metrics.jsonl every train.log_every steps)")
    assemblies = read_assemblies(storage)
    panels = assembly_panels(assemblies)
    # Figure + the Agg canvas, not pyplot: no global backend state in the caller's process.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    diagnostics = _diagnostics(storage)
    baseline = _diagnostics(against) if against is not None else None
    baseline_label = _against_label(against) if against is not None else ""
    columns = max(1, min(len(panels), PANEL_COLUMNS),
                  2 if diagnostics and diagnostics.get("chain_accuracy") else 1)
    panel_rows = -(-len(panels) // PANEL_COLUMNS)
    rows = 1 + panel_rows + bool(diagnostics)
    fig = Figure(figsize=(max(8.0, 3.5 * columns), 4.0 * rows + 0.5), dpi=100)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(rows, columns)
    ax = fig.add_subplot(grid[0, :])
    losses = []
    noise = noise_name(storage)
    for block, records in sorted(history.items()):
        points = [(r["step"], r["loss"]) for r in records if _finite(r.get("loss"))]
        if not points:
            continue
        losses += [loss for _, loss in points]
        steps, values = zip(*points, strict=True)
        line, = ax.plot(steps, values, label=block_label(block, records[-1], noise),
                        marker="." if len(points) <= 30 else None)
        held = [(r["step"], r["heldout_loss"]) for r in records
                if _finite(r.get("heldout_loss"))]
        if held:  # the same colour, dashed: held-out rows, the EMA weights
            losses += [loss for _, loss in held]
            steps, values = zip(*held, strict=True)
            ax.plot(steps, values, "--", marker="x", color=line.get_color(),
                    label=f"block {block} held-out")
    # Blocks of high noise have losses an order of magnitude apart from those of low noise.
    if losses and min(losses) > 0 and max(losses) / min(losses) > 10:
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step (of each block)")
    ax.set_ylabel("loss (training: mean of train.log_every steps)")
    ax.set_title("training loss per block (dashed: held-out, EMA weights)")
    ax.grid(alpha=0.3)
    if losses:
        ax.legend(fontsize="small")
    for i, (key, reference) in enumerate(panels):
        panel = fig.add_subplot(grid[1 + i // PANEL_COLUMNS, i % PANEL_COLUMNS],
                                sharex=ax)  # the loss panel's steps
        points = [(r["step"], r[key]) for r in assemblies if _finite(r.get(key))]
        steps, values = zip(*points, strict=True)
        panel.plot(steps, values, marker="o", label="composed network")
        if reference:  # a value of the data, the same at every assembly: its latest
            data = [r[reference] for r in assemblies if _finite(r.get(reference))][-1]
            panel.axhline(data, color="k", linestyle="--", label=f"the data ({reference})")
            panel.legend(fontsize="small")
        panel.set_xlabel("step (lowest of the blocks' snapshots)")
        panel.set_ylabel(key)
        panel.set_title(f"assembly: {key}")
        panel.grid(alpha=0.3)
    if diagnostics:
        chain = bool(diagnostics.get("chain_accuracy"))
        _draw_diagnostics(fig, grid[rows - 1, 0] if chain else grid[rows - 1, :],
                          diagnostics, baseline, baseline_label)
        if chain:
            _draw_chain(fig.add_subplot(grid[rows - 1, 1]), diagnostics["chain_accuracy"])
    fig.suptitle(storage.uri())
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def assembly_panels(assemblies: list[dict]) -> list[tuple[str, str | None]]:
    """(metric, the data's reference metric drawn with it or None) of each assembly panel:
    every metric with a finite value, but for those that do not change over training and the
    references, in name order."""
    found = {k for r in assemblies for k, v in r.items() if k not in NOT_METRICS and _finite(v)}
    shown = sorted(k for k in found if k not in CONSTANT and k not in REFERENCES
                   and not any(part in k for part in CONSTANT_PARTS))
    partner = {metric: ref for ref, metric in REFERENCES.items() if ref in found}
    return [(k, partner.get(k)) for k in shown]


def noise_name(storage: Storage) -> str:
    """What a run's noise level is called: ``t``, the masking time, for mdm, else ``sigma``
    (also where config.yaml cannot be read: a plot is a convenience)."""
    from dbparallel.training.run_files import stored_config

    try:
        task = stored_config(storage).get("task")
    except Exception:  # a label is no reason to fail a plot
        task = None
    return "t" if task == "mdm" else "sigma"


def block_label(block: int, record: dict, noise: str) -> str:
    """A block's legend entry, with its noise range (``sigma_lo``/``sigma_hi`` of its latest
    metrics line, in the run's ``noise``: mdm's t too) where the line has one."""
    lo, hi = record.get("sigma_lo"), record.get("sigma_hi")
    label = f"block {block}"
    if _finite(lo) and _finite(hi):
        label += f"  ({noise} {lo:.3g} to {hi:.3g})"
    return label


def _diagnostics(storage: Storage) -> dict | None:
    from dbparallel.training.eval.diagnostics import FILE

    if not storage.exists(FILE):
        return None
    found = storage.read_json(FILE)
    return found if isinstance(found, dict) and found.get("loss_by_noise") else None


def _against_label(against: Storage) -> str:
    """How the --against run is named in the legend: an end-to-end baseline as such, any
    other run by its directory."""
    from dbparallel.training.run_files import stored_config

    try:
        objective = stored_config(against).get("train", {}).get("objective")
    except Exception:  # a plot is a convenience: a label is no reason to fail
        objective = None
    return ("end to end (--against)" if objective == "end_to_end"
            else f"{against.uri()} (--against)")


def _draw_diagnostics(fig: Any, where: Any, diagnostics: dict, baseline: dict | None,
                      baseline_label: str) -> None:
    """Unweighted loss per noise bin, one colour per block, and the baseline's dashed."""
    ax = fig.add_subplot(where)
    log_x = diagnostics.get("noise") != "t"

    def centre(row: dict) -> float:
        return math.sqrt(row["lo"] * row["hi"]) if log_x else (row["lo"] + row["hi"]) / 2

    bins = diagnostics["loss_by_noise"]
    for block in sorted({row["block"] for row in bins}):
        mine = [row for row in bins if row["block"] == block]
        ax.plot([centre(r) for r in mine], [r["unweighted_loss"] for r in mine], marker="o",
                label=f"block {block}")
    if baseline:
        other = baseline["loss_by_noise"]
        ax.plot([centre(r) for r in other], [r["unweighted_loss"] for r in other], "k--",
                marker="x", label=baseline_label)
    if log_x:
        ax.set_xscale("log")
    values = [r["unweighted_loss"] for r in bins]
    if min(values) > 0 and max(values) / min(values) > 10:
        ax.set_yscale("log")
    ax.invert_xaxis()  # the chain runs from high noise to low
    ax.set_xlabel(f"noise level {diagnostics.get('noise', 'sigma')} (the chain runs left to "
                  f"right)")
    ax.set_ylabel("denoising loss, unweighted (held-out rows)")
    ax.set_title("composed network: loss per noise level, by block")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")


def _draw_chain(ax: Any, steps: list[dict]) -> None:
    ax.plot([s["step"] for s in steps], [s["accuracy"] for s in steps], marker="o")
    for s in steps:
        ax.annotate(f"block {s['block']}", (s["step"], s["accuracy"]), fontsize="small")
    ax.set_xlabel("step of the chain (high noise to low)")
    ax.set_ylabel("accuracy of the readout")
    ax.set_title("ViT chain: accuracy after each step")
    ax.grid(alpha=0.3)


def write_curves(storage: Storage) -> bool:
    """Write curves.png into the run directory; True if written. A plot is a convenience:
    any failure is logged as a warning and never fails the run."""
    try:
        storage.write_bytes(CURVES_FILE, plot_curves(storage))
    except Exception as err:  # whatever it is: plotting must never fail a finished run
        log.warning("could not write %s: %s", storage.uri(CURVES_FILE), err)
        return False
    return True
