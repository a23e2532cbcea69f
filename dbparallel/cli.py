"""dbparallel: train a network block by block with DiffusionBlocks (each block alone, as a
denoiser of its own noise levels, on its own device), and use the trained network."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Sequence

from dbparallel import cli_data, cli_network, cli_plan, cli_status, cli_stop_run
from dbparallel.cli_data import RUN_DIR_HELP, config_of, run_dir_argument, split_items
from dbparallel.cli_stop import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    StopSignals,
    Terminated,
    stop_signals,
)
from dbparallel.config import (
    Config,
    ConfigError,
    describe,
    load_config,
    notes,
    unchecked,
)
from dbparallel.errors import SPACE_FIX, UserError, out_of_space
from dbparallel.shell import RAY_JOB_VAR, resubmit_line, shell_path
from dbparallel.training.out_of_memory import START_MEMORY_FIX, out_of_memory, what_was_asked

EXIT_USER_ERROR = 2
EXIT_RUN_FAILED = 1
TRAINING = ("train", "baseline")  # commands whose rerun resumes the run


def cmd_train(args: argparse.Namespace) -> int:
    if args.help_config:  # the defaults, or the values of the recipes and overrides given
        meaning = notes()
        given = args.config or getattr(args, "local", False)
        problem, values = None, None
        if given:
            try:
                values = config_of(args)
            except ConfigError as err:  # still incomplete: show what it holds, then why
                files, overrides = split_items(args.config)
                if getattr(args, "local", False):
                    overrides.append("runtime.local=true")
                try:
                    problem, values = err, unchecked(files, overrides)
                except ConfigError:  # not even its types: the first error says it best
                    raise err from None
        for key, value in describe(values=values):
            print(f"{key}={value}" + (f"  # {meaning[key]}" if meaning.get(key) else ""))
        if problem is not None:
            print(f"dbparallel: this config would not train yet: {problem}", file=sys.stderr)
        return 0
    cfg = config_of(args)
    from dbparallel.runtime.train import train_run

    report = train_run(cfg, only_blocks=getattr(args, "block", None))
    _print_summary(cfg, report)
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    """The same architecture trained end to end, as one unit: the comparison point."""
    files, overrides = split_items(args.config)
    overrides = [*overrides, "model.blocks=1", "train.objective=end_to_end"]
    base = load_config(files, overrides)  # the recipe's blocks never constrain the baseline
    if args.local:  # in this process, so on one device: no replicas
        overrides += ["runtime.local=true", "runtime.replicas_per_block=1"]
    elif base.runtime.replicas_per_block == 1:  # one process, one device
        overrides.append("runtime.local=true")
    # else data-parallel on Ray: runtime.replicas_per_block Ray Train workers share each batch
    overrides.append(f"run.name={base.run.name}-baseline")
    if not base.run.dir:
        overrides.append(f"run.dir=runs/{base.run.name}-baseline")
    args.config = [*files, *overrides]
    args.local = False
    args.help_config = False
    return cmd_train(args)


def _print_summary(cfg: Config, report: dict) -> None:
    for row in report["per_block"]:
        speed = ""
        if row.get("achieved_tflops") is not None:
            speed = f" achieved={row['achieved_tflops']:.3g} TFLOP/s"
        if row.get("mfu") is not None:
            speed += f" mfu={row['mfu']:.1%}"
        if row.get("data_wait_share") is not None:
            speed += f" data_wait={row['data_wait_share']:.1%}"
        held = row.get("heldout_loss")
        held = f" heldout_loss={held:.5f}" if held is not None else ""
        print(f"block {row['block']}: steps={row['steps']} final_loss={row['final_loss']:.5f}"
              f"{held} restarts={row['restarts']}"
              f" peak_memory={row['peak_memory_bytes'] / 2**20:.2f} MiB"
              f" data_memory={row.get('data_memory_bytes', 0) / 2**20:.2f} MiB{speed}")
    if any(row.get("heldout_split") == "train" for row in report["per_block"]):
        print("heldout_loss: on training rows, as the data has no validation or test split: a "
              "check of the EMA weights, not a held-out score")
    if report["assembly"]:
        metrics = ", ".join(f"{k}={cli_status.metric_text(k, v)}"
                            for k, v in report["assembly"].items()
                            if v is not None)  # e.g. kid_std of one KID subset
        print(f"assembly: {metrics}")
        from dbparallel.training.eval.text import bpc_note

        note = bpc_note(cfg, report["assembly"])
        if note:
            print(note)
    else:
        print(f"assembly: not run (a subset of blocks); once every block is trained, the same "
              f"command without --block assembles them and writes the run's report.json "
              f"(`dbparallel eval {shell_path(cfg.run_dir)}` only scores them)")
    print(f"run directory: {cfg.run_dir}  ({report['wall_time_s']:.1f} s)")


def cmd_plot(args: argparse.Namespace) -> int:
    """curves.png of a run, drawn again from its metrics files (e.g. while it trains)."""
    from dbparallel.training.curves import CURVES_FILE, plot_curves
    from dbparallel.training.run_files import require_run_dir, stored_config
    from dbparallel.training.storage import reach, split_uri, write_file

    if args.out and not split_uri(args.out)[1].lower().endswith(".png"):
        raise UserError(f"--out {args.out}: the curves are a .png file; name it so")
    storage = reach(args.run_dir)
    require_run_dir(storage, args.run_dir)
    against = None
    if args.against:
        against = reach(args.against, f"--against {args.against}")
        require_run_dir(against, f"--against {args.against}")
        task, other = stored_config(storage)["task"], stored_config(against)["task"]
        if task != other:  # their noise levels and losses do not share an axis
            from dbparallel.training.network import article

            raise UserError(f"--against {args.against}: {article(other)} {other} run, and "
                            f"{args.run_dir} is {article(task)} {task} run; compare runs of "
                            f"one task")
    png = plot_curves(storage, against)
    if args.out:
        write_file(args.out, png)
    else:
        storage.write_bytes(CURVES_FILE, png)
    print(f"wrote {args.out or storage.uri(CURVES_FILE)}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dbparallel", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    config_help = "YAML recipes (jobs/*.yaml) and key=value overrides, applied in order"

    t = sub.add_parser("train", help="train every block concurrently, then assemble")
    t.add_argument("config", nargs="*", help=config_help)
    t.add_argument("--local", action="store_true", help="train in this process, without Ray")
    t.add_argument("--help-config", action="store_true",
                   help="list every config key with its default, or with its value in the "
                        "recipes and overrides given")
    t.add_argument("--block", type=int, action="append", metavar="B",
                   help="with --local: train only block B (repeatable); once every block is "
                        "trained, the same command without --block assembles them and writes "
                        "the run's report")
    t.set_defaults(func=cmd_train)

    b = sub.add_parser("baseline", help="train the same architecture end to end (1 unit)")
    b.add_argument("config", nargs="*", help=config_help)
    b.add_argument("--local", action="store_true",
                   help="train in this process, without Ray: what baseline does anyway, "
                        "unless runtime.replicas_per_block > 1 trains it data-parallel on Ray")
    b.set_defaults(func=cmd_baseline)

    cli_plan.add_parsers(sub, config_help)

    pc = sub.add_parser("plot", help="draw a run's loss and assembly curves (curves.png)")
    pc.add_argument("run_dir", metavar="RUN_DIR", type=run_dir_argument, help=RUN_DIR_HELP)
    pc.add_argument("--out", default="",
                    help="PNG file to write, a path or URI (default: RUN_DIR/curves.png)")
    pc.add_argument("--against", default="", metavar="BASELINE_DIR", type=run_dir_argument,
                    help="draw this run's loss per noise level too (e.g. the end-to-end run "
                         "of `dbparallel baseline`)")
    pc.set_defaults(func=cmd_plot)

    cli_data.add_parsers(sub)
    cli_network.add_parsers(sub)
    cli_status.add_parsers(sub)
    cli_stop_run.add_parsers(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    p = parser()
    # Options may sit between config items (`train a.yaml --local k=v`): collect the rest.
    args, extra = p.parse_known_args(argv)
    unknown = [item for item in extra if item.startswith("-")]
    if unknown or (extra and not hasattr(args, "config")):
        commands = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
        commands.choices[args.command].error(  # the command's own usage, with its options
            f"unrecognized arguments: {' '.join(unknown or extra)}")
    if extra:
        args.config = [*args.config, *extra]
    with stop_signals() as stop:
        return _run(args, stop)


def resume_hint() -> str:
    """What resumes a stopped run: the same command again, or, where this process is a Ray
    job's entrypoint (`ray job submit`, whose job manager passes it RAY_JOB_VAR: the job
    stopped is not run again), the same job resubmitted."""
    if RAY_JOB_VAR not in os.environ:
        return "run the same command again to resume"
    return resubmit_line(sys.orig_argv)


def _as_flag(said: str, args: argparse.Namespace) -> str:
    """An error that names a Python argument (``max_new: ...``, from the API's code) names
    the command's option instead (``--max-new: ...``), and so does its text where it names
    it again (``max_new must lie in ...``: a name with ``_``, which no prose word is); one
    that names a path given on the command line (a run directory called ``samples``) stays
    as it is."""
    key, sep, rest = said.partition(":")
    positional = ("config", "source", "images", "run_dir", "command", "func", "action")
    values = [getattr(args, name, None) for name in positional]
    given = [str(v) for g in values for v in (g if isinstance(g, list) else [g])]
    if sep and key.isidentifier() and key in vars(args) and key not in positional \
            and key not in given:
        flag = f"--{key.replace('_', '-')}"
        if "_" in key:
            rest = re.sub(rf"(?<![\w.-]){key}(?!\w)", flag, rest)
        return f"{flag}:{rest}"
    return said


def _run(args: argparse.Namespace, stop: StopSignals | None) -> int:
    try:
        return args.func(args)
    except BrokenPipeError:  # the reader (head, less) stopped reading: nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM: checkpoints written stay
        resume = f" ({resume_hint()})" if args.command in TRAINING else ""
        stopped = stop.terminated(err) if stop is not None else isinstance(err, Terminated)
        print(f"\ndbparallel: {'stopped (SIGTERM)' if stopped else 'interrupted'}{resume}",
              file=sys.stderr)
        return EXIT_TERMINATED if stopped else EXIT_INTERRUPTED
    except (ConfigError, UserError) as err:
        print(f"dbparallel: error: {_as_flag(str(err), args)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except RuntimeError as err:
        if out_of_memory(err) and type(err).__name__ != "OutOfMemory":  # not at a block's step
            fix = (START_MEMORY_FIX if args.command in TRAINING else
                   "plan draws one row of a block's noise in this machine's memory, and one "
                   "row of these sizes does not fit (data.image_size x data.channels, or "
                   "data.seq_len x model.hidden)" if args.command == "plan" else
                   "the network does not fit in the device's free memory: --device cpu, or a "
                   "device with more free")
            print(f"dbparallel: {'run failed' if args.command in TRAINING else 'error'}: "
                  f"{what_was_asked(err)}: {fix}", file=sys.stderr)
            return EXIT_RUN_FAILED
        if type(err).__name__ not in ("RunFailed", "NonFiniteLoss", "OutOfMemory"):
            raise
        print(f"dbparallel: run failed: {err}", file=sys.stderr)
        return EXIT_RUN_FAILED
    except OSError as err:  # a full disk: one line, what was written stays
        if not out_of_space(err):
            raise
        then = (f"; the checkpoints written stay ({resume_hint()})" if args.command in TRAINING
                else ", and run the command again")
        print(f"dbparallel: {'run failed' if args.command in TRAINING else 'error'}: {err}: "
              f"{SPACE_FIX}{then}", file=sys.stderr)
        return EXIT_RUN_FAILED


if __name__ == "__main__":  # python -m dbparallel.cli, as python -m dbparallel
    raise SystemExit(main())
