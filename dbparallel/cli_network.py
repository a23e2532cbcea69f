"""The commands that use a trained network: eval, sample, export, generate, predict.

Each takes a run directory or an export file and goes through ``dbparallel.load``
(training/network.py), the same code path as the Python API.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

from dbparallel.cli_data import RUN_DIR_HELP, run_dir_argument
from dbparallel.cli_network_data import network_data
from dbparallel.errors import UserError

if TYPE_CHECKING:
    from dbparallel.config import Config
    from dbparallel.training.network import Network

DEVICE_HELP = "cpu (default), cuda or cuda:N (an error where no CUDA device is here)"
DATA_HELP = ("read the data here, in place of data.path (same data.source): data that moved, "
             "an export on a machine that has them elsewhere, or other data of the same kind")


def _load(args: argparse.Namespace) -> Network:
    from dbparallel.training.device import requested_device
    from dbparallel.training.loading import load

    requested_device(args.device or None, "--device")  # named as given, before the load
    return load(args.source, getattr(args, "step", None), args.device or None)


def _out_file(out: str) -> None:
    """UserError naming --out where ``out`` is no file to write (training/run_dir.py)."""
    from dbparallel.training.run_dir import check_out_file

    check_out_file(out, "--out")


def _kind(task: str) -> str:
    """``a dit network (image generation)``: what a network of ``task`` is, in words."""
    from dbparallel.training.network import article

    what = {"dit": "image generation", "vit": "image classification"}.get(task, "text")
    return f"{article(task)} {task} network ({what})"


def _samples_file(cfg: Config) -> str:
    """The kind of file ``dbparallel sample`` writes for a network of ``cfg``."""
    if cfg.task == "dit":
        # latents for the autoencoder, unless sample.decoder decodes them
        return ".safetensors" if cfg.data.latents and not cfg.sample.decoder else ".png"
    return ".json" if cfg.task == "vit" else ".txt"


def _instead(source: str, cfg: Config) -> str:
    """The command that does for a network of ``cfg`` what another command does for
    another kind: what a refusal names."""
    from dbparallel.shell import shell_path

    run, task, kind = shell_path(source), cfg.task, _samples_file(cfg)
    return {"dit": f"for this run use `dbparallel sample {run} --out FILE{kind}`, which draws "
                   f"its {'latents' if kind == '.safetensors' else 'images'}",
            "vit": f"for this run use `dbparallel predict {run} IMAGES`, which classifies "
                   f"images"}.get(task, f"for this run use `dbparallel generate {run} --prompt "
                                      f"TEXT`")


@contextlib.contextmanager
def _trained_sizes(network: Network) -> Iterator[None]:
    """A trained network's data.resize is fixed: an image of another size than its own
    names the size to resize it to, not the key."""
    from dbparallel.data.encoded import RESIZE_HINT, trained_size_hint
    from dbparallel.errors import DataError

    try:
        yield
    except DataError as err:
        if RESIZE_HINT not in str(err):
            raise
        raise DataError(trained_size_hint(str(err), network.cfg.data.image_size)) from None


def cmd_eval(args: argparse.Namespace) -> int:
    network = _load(args)
    with _trained_sizes(network):
        metrics = network.evaluate(network_data(network, args.source, args.data))
    if args.json:
        print(json.dumps(metrics))
    else:
        for k, v in metrics.items():
            if v is not None:  # e.g. kid_std of one KID subset (null in --json)
                # counts (bytes, rows) whole, not 2.39624e+07
                print(f"{k}: {v}" if isinstance(v, int) else f"{k}: {v:.6g}")
        from dbparallel.training.eval.text import bpc_note

        note = bpc_note(network.cfg, metrics)
        if note:
            print(note)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from dbparallel.training.network import article
    from dbparallel.training.storage import split_uri, write_file

    network = _load(args)
    needs_data = network.cfg.task != "dit"  # ViT's confusion and text prompts read the data
    if args.data and not needs_data:
        raise UserError("--data: a dit network's samples read no data (they are drawn from "
                        "noise for each class)")
    kind = _samples_file(network.cfg)
    if not split_uri(args.out)[1].lower().endswith(kind):
        what = " of latents" if kind == ".safetensors" else ""
        raise UserError(f"--out {args.out}: {article(network.cfg.task)} {network.cfg.task} "
                        f"run{what}'s samples are a {kind} file; name it so")
    _out_file(args.out)
    folder = os.path.dirname(os.path.abspath(args.out))
    if "://" not in args.out and (not os.path.isdir(folder) or not os.access(folder, os.W_OK)):
        raise UserError(f"--out {args.out}: cannot write into {folder}")
    with _trained_sizes(network):
        _, data = network.artifact(network_data(network, args.source, args.data) if needs_data
                                   else None)
    write_file(args.out, data)  # a local path or a URI
    print(f"wrote {args.out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from dbparallel.training.loading import export_run

    _out_file(args.out)
    network = export_run(args.source, args.out, args.step)
    steps = network.steps
    at = f"1 block at step {steps[0]:,}" if len(steps) == 1 else \
        f"{len(steps)} blocks at steps {', '.join(f'{s:,}' for s in steps)}"
    print(f"wrote {args.out}: {network.cfg.task}, {at}; load it with "
          f"dbparallel.load({args.out!r})")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    if args.samples < 1:
        raise UserError(f"--samples: must be >= 1, got {args.samples}")
    network = _load(args)
    if "generate" not in network.verbs:
        raise UserError(f"generate: {args.source} is {_kind(network.cfg.task)}; generate "
                        f"continues a prompt with a text network (mdm, ar, looped); "
                        f"{_instead(args.source, network.cfg)}")
    for k in range(args.samples):
        text = network.generate(args.prompt, args.max_new, args.temperature, args.seed + k,
                                progress=sys.stderr.isatty())
        if args.samples > 1:
            print(f"--- sample {k}")
        print(args.prompt + text if not args.only_new else text)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from dbparallel import errors
    from dbparallel.data.image_files import image_inputs, read_batches

    if args.batch < 1:
        raise UserError(f"--batch: must be >= 1, got {args.batch}")
    network = _load(args)
    if "predict" not in network.verbs:
        raise UserError(f"predict: {args.source} is {_kind(network.cfg.task)}; predict "
                        f"classifies images with a vit network; "
                        f"{_instead(args.source, network.cfg)}")
    inputs = image_inputs(args.images)
    total = inputs.count()
    if not total:
        raise UserError(f"predict: {args.images} holds no image")
    data = dataclasses.replace(network.cfg.data, resize=True) if args.resize else \
        network.cfg.data
    classes, bad = network.class_names, []
    with tqdm(total=total, unit="image", desc="predict", disable=not sys.stderr.isatty(),
              leave=False) as bar:
        for part in read_batches(inputs, data, args.batch):
            bad += part.bad
            probs = network.predict(part.pixels).softmax(dim=1) if part.names else []
            for name, p in zip(part.names, probs, strict=True):
                label = int(p.argmax())
                row = {"input": name, "class": label,
                       "name": classes[label] if label < len(classes) else None,
                       "probability": round(float(p.max()), 4)}
                shown = label if row["name"] is None else row["name"]
                print(json.dumps(row) if args.json else f"{name}\t{shown}\t{row['probability']}")
            sys.stdout.flush()  # each batch as it is classified
            bar.update(len(part.names) + len(part.bad))
    if bad:  # every image it could read is classified above
        listed = "\n  ".join(bad[:errors.MAX_BAD_ROWS])
        first = f"; the first {errors.MAX_BAD_ROWS}" if len(bad) > errors.MAX_BAD_ROWS else ""
        raise UserError(f"{len(bad)} bad image{'s' * (len(bad) != 1)}, left out of the "
                        f"predictions{first}:\n  {listed}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """The subcommands of this module, on ``sub``."""
    source_help = "a run directory (path or URI) or a file written by `dbparallel export`"

    e = sub.add_parser("eval", help="re-assemble a run's blocks and evaluate them")
    e.add_argument("source", metavar="RUN_DIR", type=run_dir_argument, help=source_help)
    e.add_argument("--json", action="store_true",
                   help="print the metrics as one JSON object (null where a metric has none)")
    e.add_argument("--step", type=int, default=None,
                   help="evaluate the snapshots of this step (see train.keep_snapshots; "
                        "default: the latest)")
    e.add_argument("--device", default="", help=DEVICE_HELP)
    e.add_argument("--data", default="", metavar="PATH", help=DATA_HELP)
    e.set_defaults(func=cmd_eval)

    s = sub.add_parser("sample", help="write the run's samples (samples.png, confusion.json, "
                                      "samples.txt)")
    s.add_argument("source", metavar="RUN_DIR", type=run_dir_argument, help=source_help)
    s.add_argument("--out", required=True,
                   help="the file to write, a path or URI: a .png (dit: a grid, a row per "
                        "class), a .json (vit: its confusion matrix), a .txt (text tasks)")
    s.add_argument("--device", default="", help=DEVICE_HELP)
    s.add_argument("--data", default="", metavar="PATH",
                   help=DATA_HELP + " (vit and text networks read data for their samples)")
    s.set_defaults(func=cmd_sample)

    x = sub.add_parser("export", help="write every block's EMA weights, the config and the "
                                      "partition to one safetensors file")
    x.add_argument("source", metavar="RUN_DIR", type=run_dir_argument, help=RUN_DIR_HELP)
    x.add_argument("--out", required=True, help="the file to write (path or URI)")
    x.add_argument("--step", type=int, default=None,
                   help="export the snapshots of this step (default: the latest)")
    x.set_defaults(func=cmd_export, device="")

    g = sub.add_parser("generate", help="continue a prompt with a text network")
    g.add_argument("source", metavar="RUN_DIR", type=run_dir_argument, help=source_help)
    g.add_argument("--prompt", required=True, help="the text to continue")
    g.add_argument("--max-new", type=int, default=None, metavar="N",
                   help="tokens to generate (default: ar/looped sample.gen_len, and past "
                        "data.seq_len in all a warning says the network reads further than it "
                        "was trained to; mdm: a whole data.seq_len row is unmasked after the "
                        "prompt, as in training, and its first N new tokens are printed, "
                        "default all; N past the row's end is refused). A bar on a terminal "
                        "shows the tokens (mdm: the unmasking steps)")
    g.add_argument("--temperature", type=float, default=1.0,
                   help="softmax temperature of each draw (default 1.0); "
                        "0: the most likely token at each draw; the text still varies with "
                        "--seed, and between --samples (ar, looped: each token's chain starts "
                        "from noise; mdm: the order of unmasking is drawn)")
    g.add_argument("--samples", type=int, default=1,
                   help="continuations to draw, sample k with seed --seed + k (default 1)")
    g.add_argument("--seed", type=int, default=0, help="seed of the first sample (default 0)")
    g.add_argument("--only-new", action="store_true", help="print the continuation alone")
    g.add_argument("--device", default="", help=DEVICE_HELP)
    g.set_defaults(func=cmd_generate)

    p = sub.add_parser("predict", help="classify images with a ViT network")
    p.add_argument("source", metavar="RUN_DIR", type=run_dir_argument, help=source_help)
    p.add_argument("images", metavar="IMAGES", help="a PNG/JPEG file, a folder of them, or a "
                                                    "Parquet table with an image column")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per image: input, class (the label), name (the "
                        "class folder's name; null where the data name no classes), "
                        "probability")
    p.add_argument("--batch", type=int, default=256,
                   help="images read and classified at once (memory: one batch of images "
                        "and of the network's activations; default 256)")
    p.add_argument("--resize", action="store_true",
                   help="turn each encoded image upright by its EXIF orientation, cut it to "
                        "its centre square and resize it to the network's size, as "
                        "data.resize=true does (a network trained so does it anyway)")
    p.add_argument("--device", default="", help=DEVICE_HELP)
    p.set_defaults(func=cmd_predict)
