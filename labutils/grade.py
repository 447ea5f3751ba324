"""Autograding: run each student's submitted notebook with the hidden tests put back, and score every exercise.

    python -m labutils.grade SUBMISSIONS_DIR [--out DIR] [--timeout SECONDS] [--profile quick|full]

Submissions are laid out one folder per student, one notebook per lab, named like the lab::

    SUBMISSIONS_DIR/ada/02_backprop_and_optimizers.ipynb
    SUBMISSIONS_DIR/alan/02_backprop_and_optimizers.ipynb

A submission is matched with its solution notebook in ``notebooks/`` by the lab's number (``02_...``). Its cells
are matched with the solution's by cell id (the student edition keeps the ids, see :mod:`labutils.student`):
every cell that holds hidden tests in the solution (the exercise's check, between ``### BEGIN HIDDEN TESTS`` and
``### END HIDDEN TESTS``) replaces the student's copy, and the parameters cell is put back too, so every
submission runs in the same profile. Then the notebook runs in a fresh kernel, cell by cell, from the top to the
last check (what follows is not graded), errors not stopping it. The whole run has one time limit: at the limit
the kernel is killed.

An exercise scores its points when its check cell ran without an error, else zero with a message: the first
line of the error, "timed out" for the exercise whose cell was running at the limit (and "not run" for those
after it), or "check cell missing" when the student deleted or recreated it. A submission that cannot be
read or run at all scores zero for each of its exercises with the reason; nothing a submission does stops the
run of the others.

Output, in ``--out`` (default: SUBMISSIONS_DIR): ``grades.csv`` (student, lab, exercise, points, message),
``summary.md`` (one page: each student's total, each exercise's pass rate, the notebooks that did not finish)
and ``graded/<student>/<lab>.ipynb``, the executed notebooks, where a student or instructor sees each error.

The submissions run as the grader's own user, in its environment: grading runs the students' code, so run it
in a container or an account that holds nothing else.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import os
import re
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import nbformat

from . import check_profile
from .student import BEGIN_HIDDEN_TESTS, exercise_cells, exercise_names
from .util import REPO_ROOT, atomic_write_text

__all__ = ["Grade", "Exercise", "exercises", "prepare", "grade_notebook", "grade_all", "main"]

POINTS = 1  # per exercise
DEFAULT_TIMEOUT_S = 600
CSV_COLUMNS = ["student", "lab", "exercise", "points", "message"]
MESSAGE_CHARS = 300  # a message is one line of the CSV


@dataclass(frozen=True)
class Grade:
    """One row of grades.csv."""

    student: str
    lab: str
    exercise: str
    points: int
    message: str


@dataclass(frozen=True)
class Exercise:
    """An exercise of a lab: its name, the id of the cell the student writes, and the id of its check cell."""

    name: str
    cell_id: str
    check_id: str


def exercises(solution) -> list[Exercise]:
    """The exercises of a solution notebook, in order, each with the first hidden-test cell after it."""
    cells = solution.cells
    found = []
    for index, name in zip(exercise_cells(solution), exercise_names(solution)):
        check = next((c for c in cells[index + 1 :] if BEGIN_HIDDEN_TESTS in c.source), None)
        if check is None:
            raise ValueError(f"Exercise {name} (cell {cells[index].get('id')}) has no hidden-test cell after it.")
        found.append(Exercise(name, cells[index].get("id"), check.get("id")))
    return found


def prepare(submission, solution) -> tuple:
    """The notebook to run: ``submission`` with the solution's hidden-test and parameters cells put back by id.

    Returns ``(notebook, missing)``, ``missing`` holding the ids of the check cells the submission lacks.
    """
    graded = nbformat.from_dict(submission)
    by_id = {cell.get("id"): cell for cell in graded.cells}
    missing = set()
    for cell in solution.cells:
        restore = BEGIN_HIDDEN_TESTS in cell.source or "parameters" in cell.metadata.get("tags", [])
        if not restore:
            continue
        target = by_id.get(cell.get("id"))
        if target is None:
            missing.add(cell.get("id"))
        else:
            target.cell_type, target.source = cell.cell_type, cell.source
    return graded, missing


def _first_line(text: str) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", text).strip()  # IPython colours
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= MESSAGE_CHARS else line[: MESSAGE_CHARS - 3] + "..."


def _error_of(cell) -> str | None:
    """``"Name: first line"`` of the error a cell raised, or None if it ran cleanly."""
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            ename, evalue = output.get("ename", "Error"), _first_line(output.get("evalue", ""))
            return _first_line(f"{ename}: {evalue}" if evalue else ename)
    return None


@dataclass
class _Run:
    """How far a notebook got: ``ran`` holds the indices of the cells that finished; ``stopped_at`` the cell that
    was running when the run ended early (time limit or a dead kernel), with the reason."""

    ran: set
    stopped_at: int | None = None
    reason: str = ""


def _quiet_log() -> logging.Logger:
    log = logging.getLogger("labutils.grade.kernel")  # nbclient logs timeouts as errors; the grade says it
    log.addHandler(logging.NullHandler())
    log.propagate = False
    return log


def _execute(nb, last: int, timeout: float, workdir: Path, profile: str) -> _Run:
    """Run cells 0..``last`` of ``nb`` in place in a fresh kernel (cwd ``workdir``) within ``timeout`` seconds."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    env = dict(os.environ)
    env.update(
        LABS_PROFILE=profile,
        LABS_RUNS=str(workdir / "runs"),  # each submission its own cache: never another student's results
        MPLBACKEND="Agg",
        WANDB_MODE="offline",
        WANDB_DIR=str(workdir / "wandb"),
        WANDB_SILENT="true",
    )
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # several kernels share the cores
        env.setdefault(name, "1")
    client = NotebookClient(
        nb,
        kernel_name="python3",
        allow_errors=True,  # a failing exercise must not stop the checks of the others
        shutdown_kernel="immediate",  # kill, do not ask: the kernel may be stuck in the student's loop
        interrupt_on_timeout=False,
        startup_timeout=120,
        log=_quiet_log(),
        resources={"metadata": {"path": str(workdir)}},
    )
    run = _Run(ran=set())
    deadline = time.monotonic() + timeout
    client.timeout_func = lambda cell: max(1, int(deadline - time.monotonic()) + 1)
    client.reset_execution_trackers()
    kernel_log = open(workdir / "kernel.log", "w")  # noqa: SIM115 -- the kernel's own messages, not the cells'
    try:
        with kernel_log, client.setup_kernel(env=env, stderr=kernel_log):
            deadline = time.monotonic() + timeout  # the limit is for the student's code, not the kernel's start
            for index, cell in enumerate(nb.cells[: last + 1]):
                if cell.cell_type != "code":
                    continue
                if time.monotonic() >= deadline:
                    run.stopped_at, run.reason = index, f"timed out at the {timeout:.0f} s limit"
                    break
                try:
                    client.execute_cell(cell, index)
                except CellTimeoutError:
                    run.stopped_at, run.reason = index, f"timed out at the {timeout:.0f} s limit"
                    break
                except DeadKernelError:
                    run.stopped_at, run.reason = index, "the kernel died (out of memory, or the code ended the process)"
                    break
                run.ran.add(index)
    except DeadKernelError:  # while shutting down a kernel that had already died
        pass
    return run


def _cell_name(nb, index: int) -> str:
    return f"cell {index + 1} (id {nb.cells[index].get('id')})"


def _score(nb, plan: list[Exercise], missing: set, run: _Run) -> list[tuple[str, int, str]]:
    """``(exercise, points, message)`` for each exercise of ``plan``, from the executed notebook ``nb``."""
    position = {cell.get("id"): i for i, cell in enumerate(nb.cells)}
    rows = []
    for exercise in plan:
        check, own = position.get(exercise.check_id), position.get(exercise.cell_id)
        if exercise.check_id in missing or check is None:
            message = (
                f"check cell missing: the submission has no cell with id {exercise.check_id!r} (deleted or "
                "recreated); keep the check cells of the student edition"
            )
        elif check in run.ran:
            error = _error_of(nb.cells[check])
            own_error = _error_of(nb.cells[own]) if own in run.ran else None
            if error is None:
                rows.append((exercise.name, POINTS, "passed"))
                continue
            message = f"your exercise cell raised {own_error}" if own_error else f"the check failed: {error}"
        else:  # the run stopped early, at or before this check
            stop = run.stopped_at
            first = own if own is not None and own < check else check
            where = {own: "this exercise's cell", check: "its check cell"}.get(stop, "a cell before the check")
            if stop is not None and stop >= first:
                message = f"{run.reason} in {_cell_name(nb, stop)}, {where}; the kernel was stopped"
            else:
                message = f"not run: the notebook stopped earlier, {run.reason} in {_cell_name(nb, stop)}"
        rows.append((exercise.name, 0, message))
    return rows


def grade_notebook(
    path: Path, solution_path: Path, timeout: float = DEFAULT_TIMEOUT_S, profile: str = "quick", graded_path=None
) -> list[tuple[str, int, str]]:
    """Grade one submitted notebook against its solution: ``(exercise, points, message)`` per exercise.

    Never raises for what the submission holds; ``graded_path`` receives the executed notebook if given.
    """
    solution = nbformat.read(solution_path, as_version=4)
    plan = exercises(solution)
    try:
        submission = nbformat.read(path, as_version=4)
    except Exception as exc:  # not JSON, not a notebook: whatever the file is, it scores zero
        reason = f"not a readable notebook ({type(exc).__name__}: {_first_line(str(exc))})"
        return [(exercise.name, 0, reason) for exercise in plan]
    nb, missing = prepare(submission, solution)
    checks = [i for i, cell in enumerate(nb.cells) if cell.get("id") in {e.check_id for e in plan}]
    with tempfile.TemporaryDirectory(prefix="labs-grade-") as tmp:
        try:
            run = _execute(nb, max(checks, default=-1), timeout, Path(tmp), profile)
        except Exception as exc:  # the kernel did not start, or nbclient failed outside any cell
            reason = f"the notebook could not be run ({type(exc).__name__}: {_first_line(str(exc))})"
            return [(exercise.name, 0, reason) for exercise in plan]
    if graded_path is not None:
        Path(graded_path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(graded_path, nbformat.writes(nb) + "\n")
    return _score(nb, plan, missing, run)


def _solutions(solutions_dir: Path) -> dict[str, Path]:
    """Lab number (``"02"``) -> solution notebook, for the labs that have exercises."""
    found = {}
    for path in sorted(solutions_dir.glob("[0-9][0-9]_*.ipynb")):
        if exercise_cells(nbformat.read(path, as_version=4)):
            found[path.name[:2]] = path
    return found


def _grade_safely(path: Path, solution: Path, timeout: float, profile: str, graded_path: Path):
    """:func:`grade_notebook` in a worker process; ``(rows, seconds)``."""
    start = time.monotonic()
    return grade_notebook(path, solution, timeout, profile, graded_path), time.monotonic() - start


def grade_all(
    submissions_dir,
    out_dir=None,
    timeout: float = DEFAULT_TIMEOUT_S,
    profile: str = "quick",
    solutions_dir=None,
    jobs: int | None = None,
    progress=print,
) -> list[Grade]:
    """Grade every ``<student>/<NN_lab>.ipynb`` under ``submissions_dir``; write grades.csv, summary.md and the
    executed notebooks to ``out_dir`` (default: ``submissions_dir``). Returns the rows of grades.csv.

    ``jobs`` notebooks run at once (default: one per CPU core, at most 4), each in its own process and kernel. A
    student without a lab that others submitted scores zero for its exercises ("no submission"); a file that is
    not a lab with exercises gets one row saying so.
    """
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    submissions_dir = Path(submissions_dir)
    if not submissions_dir.is_dir():
        raise ValueError(f"Submissions folder {str(submissions_dir)!r} does not exist: expected <student>/<lab>.ipynb.")
    check_profile(profile)
    if not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}.")
    jobs = jobs or max(1, min(4, os.cpu_count() or 1))
    out_dir = Path(out_dir) if out_dir is not None else submissions_dir
    solutions = _solutions(Path(solutions_dir) if solutions_dir is not None else REPO_ROOT / "notebooks")
    students = sorted(p for p in submissions_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    students = [p for p in students if p.resolve() != (out_dir / "graded").resolve()]
    submitted = {s.name: sorted(s.glob("*.ipynb")) for s in students}
    labs = sorted({p.name[:2] for paths in submitted.values() for p in paths if p.name[:2] in solutions})
    if not labs:
        raise ValueError(
            f"No submission in {str(submissions_dir)!r} is a lab with exercises: expected "
            f"<student>/<lab>.ipynb for labs {', '.join(p.name for p in solutions.values())}."
        )
    rows: dict[tuple[str, str], list[Grade]] = {}
    tasks = {}  # (student, lab) -> arguments of _grade_safely
    for student, paths in submitted.items():
        for path in paths:
            if path.name[:2] not in solutions:
                message = f"not a lab with exercises: name the file like the lab ({', '.join(solutions)})"
                rows[student, path.stem] = [Grade(student, path.stem, "", 0, message)]
        for lab in labs:
            solution = solutions[lab]
            mine = sorted((p for p in paths if p.name[:2] == lab), key=lambda p: p.name != solution.name)
            if mine:
                tasks[student, lab] = (
                    mine[0],
                    solution,
                    timeout,
                    profile,
                    out_dir / "graded" / student / solution.name,
                )
            else:
                rows[student, lab] = [
                    Grade(student, solution.stem, e.name, 0, "no submission") for e in exercises_of(solution)
                ]

    def record(key: tuple[str, str], result) -> None:
        student, lab = key
        solution = solutions[lab]
        if isinstance(result, Exception):  # the grading process itself failed: zero here, the others go on
            reason = f"the notebook could not be graded ({type(result).__name__}: {_first_line(str(result))})"
            result = [(e.name, 0, reason) for e in exercises_of(solution)], 0.0
        graded, seconds = result
        rows[key] = [Grade(student, solution.stem, *row) for row in graded]
        score = sum(row[1] for row in graded)
        progress(f"{student:<20} {solution.stem:<32} {score}/{len(graded) * POINTS} points  ({seconds:.0f} s)")

    if jobs == 1:
        for key, args in tasks.items():
            try:
                record(key, _grade_safely(*args))
            except Exception as exc:
                record(key, exc)
    else:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(_grade_safely, *args): key for key, args in tasks.items()}
            for future in as_completed(futures):
                try:
                    record(futures[future], future.result())
                except Exception as exc:
                    record(futures[future], exc)
    ordered = [grade for key in sorted(rows) for grade in rows[key]]
    write_csv(ordered, out_dir / "grades.csv")
    atomic_write_text(out_dir / "summary.md", summary(ordered))
    return ordered


def exercises_of(solution_path: Path) -> list[Exercise]:
    return exercises(nbformat.read(solution_path, as_version=4))


def write_csv(rows: list[Grade], path: Path) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows([r.student, r.lab, r.exercise, r.points, r.message] for r in rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, buffer.getvalue())


def read_csv(path) -> list[Grade]:
    with open(path, newline="") as fh:
        return [
            Grade(r["student"], r["lab"], r["exercise"], int(r["points"]), r["message"]) for r in csv.DictReader(fh)
        ]


def summary(rows: list[Grade]) -> str:
    """One page of markdown: each student's total, each exercise's pass rate, the runs that did not finish."""
    graded = [r for r in rows if r.exercise]
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    per_exercise: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for r in graded:
        totals[r.student][0] += r.points
        totals[r.student][1] += POINTS
        per_exercise[r.lab, r.exercise][0] += r.points > 0
        per_exercise[r.lab, r.exercise][1] += 1
    out = ["# Grades", "", f"{len(totals)} students, {len(per_exercise)} exercises.", ""]
    out += ["| student | points | of |", "|---|---:|---:|"]
    out += [f"| {s} | {p} | {n} |" for s, (p, n) in sorted(totals.items())]
    out += ["", "| lab | exercise | passed | pass rate |", "|---|---|---:|---:|"]
    out += [f"| {lab} | {ex} | {k}/{n} | {k / n:.0%} |" for (lab, ex), (k, n) in per_exercise.items()]
    trouble = [r for r in rows if r.message.startswith(("timed out", "not a ", "the notebook could not", "check cell"))]
    if trouble:
        out += ["", "Needs a look:", ""]
        out += [f"- {r.student}, {r.lab}{', ' + r.exercise if r.exercise else ''}: {r.message}" for r in trouble]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m labutils.grade",
        description="Grade student notebooks (SUBMISSIONS_DIR/<student>/<NN_lab>.ipynb) with the hidden tests.",
    )
    parser.add_argument("submissions", type=Path, help="folder with one sub-folder per student")
    parser.add_argument("--out", type=Path, default=None, help="where grades.csv and summary.md go (default: there)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per notebook (default 600)")
    parser.add_argument("--profile", default="quick", help="profile the notebooks run in (default quick)")
    parser.add_argument("--solutions", type=Path, default=None, help="solution notebooks (default: notebooks/)")
    parser.add_argument("--jobs", type=int, default=None, help="notebooks graded at once (default: CPU cores, max 4)")
    args = parser.parse_args(argv)
    try:
        rows = grade_all(args.submissions, args.out, args.timeout, args.profile, args.solutions, args.jobs)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.out or args.submissions
    points = sum(r.points for r in rows)
    print(f"{len(rows)} grades, {points} points in all: {out / 'grades.csv'}, {out / 'summary.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
