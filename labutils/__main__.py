"""``python -m labutils`` — run the labs, fetch data, keep notebooks clean.

python -m labutils run [NOTEBOOK ...] [--profile quick|full] [-p NAME VALUE ...]
python -m labutils data [NAME ...]
python -m labutils strip [--check] [NOTEBOOK ...]
python -m labutils record NOTEBOOK ...     (refresh the expected output of nbval-checked cells)
python -m labutils train RECIPE.json [--nproc N] [--profile quick|full] [--retrain]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _cmd_run(args: argparse.Namespace) -> int:
    from labutils.nbtools import check_parameters, parse_value, resolve_notebooks, run_notebooks
    from labutils.results import runs_dir

    paths = resolve_notebooks(args.notebooks)
    params = {name: parse_value(value) for name, value in args.param or []}
    check_parameters(paths, params)  # a mistake is one sentence before any kernel starts
    runs = Path(args.runs) if args.runs else runs_dir()
    print(f"Running {len(paths)} notebook(s) in the {args.profile!r} profile into {runs}/")
    results = run_notebooks(paths, args.profile, params, runs=runs)
    for r in results:  # the one place a failure is printed
        status = "ok    " if r.ok else "FAILED"
        print(f"  {status} {r.stem:<34} {r.seconds:7.1f} s" + (f"  {r.error}" if r.error else ""))
    print(f"Report: {runs / 'REPORT.md'}")
    failed = [r.stem for r in results if not r.ok]
    if failed:
        print(
            f"{len(failed)} notebook(s) failed: {', '.join(failed)}. The executed copies under {runs}/ "
            "show the failing cell.",
            file=sys.stderr,
        )
    return 1 if failed else 0


def _cmd_data(args: argparse.Namespace) -> int:
    from labutils import data

    names = args.names or list(data.DATASETS)
    for name in names:
        if name not in data.DATASETS:
            raise ValueError(f"Unknown dataset {name!r}: choose one of {', '.join(data.DATASETS)}.")
    print(f"Data directory: {data.data_dir()}")
    for name, status in data.fetch(names).items():
        print(f"  {name:<11} {status}")
    return 0


def _cmd_strip(args: argparse.Namespace) -> int:
    from labutils.nbtools import resolve_notebooks, strip_file

    changed = [p for p in resolve_notebooks(args.notebooks) if strip_file(p, check=args.check)]
    verb = "would strip" if args.check else "stripped"
    for p in changed:
        print(f"{verb} {p.name}")
    if not changed:
        print("All notebooks are clean.")
    return 1 if (args.check and changed) else 0


def _cmd_record(args: argparse.Namespace) -> int:
    import tempfile

    from labutils.nbtools import record_checked_outputs, resolve_notebooks, run_notebooks

    for path in resolve_notebooks(args.notebooks):
        with tempfile.TemporaryDirectory() as tmp:
            [result] = run_notebooks([path], "quick", runs=Path(tmp), progress=False)
            if not result.ok:
                print(f"error: {path.stem} failed in {result.error}", file=sys.stderr)
                return 1
            n = record_checked_outputs(path, result.output)
        print(f"{path.name}: recorded the expected output of {n} checked cell(s)")
    return 0


def read_recipe(path: str):
    """``(Recipe, lab)`` from a JSON file: the fields of :class:`labutils.experiment.Recipe` (the model as
    ``"labutils.models.MLP"`` or a model name) and ``"lab"``, the folder under runs/ (default: the file's name).
    A run's own ``recipe.json`` (runs/<lab>/checkpoints/<key>/recipe.json) is accepted too."""
    from labutils.experiment import Recipe

    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"Cannot read the recipe {path}: {exc}.") from None
    if not isinstance(config, dict):
        raise ValueError(f"The recipe {path} must hold one JSON object of recipe fields, not {type(config).__name__}.")
    config = dict(config.get("recipe", config))
    lab = str(config.pop("lab", Path(path).stem))
    return Recipe.from_config(config), lab


def _cmd_train(args: argparse.Namespace) -> int:
    recipe, lab = read_recipe(args.recipe)  # a mistake in the recipe is one sentence before any process starts
    from labutils import distributed

    if args.nproc is not None and not distributed.launched():
        flags = [flag for flag, on in (("--retrain", args.retrain), ("--no-progress", args.no_progress)) if on]
        again = ["train", args.recipe, "--profile", args.profile, *flags]
        return distributed.launch(again, args.nproc)
    from labutils.experiment import run

    result = run(recipe, lab=lab, profile=args.profile, retrain=args.retrain, progress=not args.no_progress)
    h, test = result.history, result.test
    if distributed.is_main():
        tested = "interrupted" if test is None else f"test accuracy {test.top1:.4f}"
        best = "no epoch done" if h.best_epoch is None else f"best validation accuracy {h.best_val_acc:.4f}"
        print(
            f"{recipe.name}: {tested}, {best} (epoch {h.best_epoch}) after {len(h)} epoch(s) on "
            f"{distributed.world_size()} process(es), {result.seconds:.1f} s; run folder {result.dir}"
        )
    distributed.teardown()
    return 0 if test is not None else 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m labutils", description="Deep Learning Labs command line.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute notebooks with papermill into runs/ and write runs/REPORT.md")
    run.add_argument("notebooks", nargs="*", help="notebook stems or numbers (default: all)")
    run.add_argument("--profile", default="quick", choices=["quick", "full"])
    run.add_argument(
        "-p",
        "--param",
        nargs=2,
        action="append",
        metavar=("NAME", "VALUE"),
        help="override a notebook parameter (a Python literal or a string); names and types are checked first",
    )
    run.add_argument("--runs", help="output folder (default: runs/ or $LABS_RUNS)")
    run.set_defaults(func=_cmd_run)
    data = sub.add_parser("data", help="fetch datasets into data/ (or $LABS_DATA) and report what is missing")
    data.add_argument("names", nargs="*", help="datasets (default: all)")
    data.set_defaults(func=_cmd_data)
    strip = sub.add_parser("strip", help="remove outputs from notebooks, keeping nbval-checked cells")
    strip.add_argument("notebooks", nargs="*")
    strip.add_argument("--check", action="store_true", help="change nothing; exit 1 if a notebook needs stripping")
    strip.set_defaults(func=_cmd_strip)
    record = sub.add_parser(
        "record",
        help="run notebooks (quick profile) and store the output of their "
        "'# NBVAL_CHECK_OUTPUT' cells as the expected output",
    )
    record.add_argument("notebooks", nargs="+")
    record.set_defaults(func=_cmd_record)
    train = sub.add_parser(
        "train",
        help="train and test one recipe (a JSON file of Recipe fields) into runs/<lab>/checkpoints/<key>/, "
        "in this process or, with --nproc N, in N processes under torchrun (DistributedDataParallel)",
    )
    train.add_argument("recipe", help="a JSON file: Recipe fields, and 'lab' (the folder under runs/)")
    train.add_argument(
        "--nproc",
        type=int,
        help="processes to launch with torchrun --standalone (one per GPU on CUDA); batch_size is the global batch",
    )
    train.add_argument("--profile", default="quick", choices=["quick", "full"])
    train.add_argument("--retrain", action="store_true", help="discard a finished run of this recipe and train again")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.set_defaults(func=_cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from labutils.nbtools import NotebookInterrupted

    try:
        return args.func(args)
    except ValueError as exc:  # a caller's mistake: one sentence, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except NotebookInterrupted as exc:  # Ctrl-C: one line, and the shell's exit status for SIGINT
        print(f"\n{exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
