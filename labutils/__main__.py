"""``python -m labutils`` — run the labs, fetch data, keep notebooks clean.

python -m labutils run [NOTEBOOK ...] [--profile quick|full] [-p NAME VALUE ...]
python -m labutils data [NAME ...]
python -m labutils strip [--check] [NOTEBOOK ...]
python -m labutils record NOTEBOOK ...     (refresh the expected output of nbval-checked cells)
"""

from __future__ import annotations

import argparse
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
