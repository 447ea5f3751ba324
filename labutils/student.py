"""The student edition: exercise notebooks generated from the solution notebooks in ``notebooks/``.

The markup is nbgrader's, inside code cells of the solution notebooks:

    def my_max_pool2d(x, kernel_size, stride):
        \"\"\"Max pooling. x: (N, C, H, W) -> (N, C, H_out, W_out).\"\"\"
        ### BEGIN SOLUTION
        ...
        ### END SOLUTION

becomes, in the student's copy, the signature and docstring followed by the stub (indented like the
``BEGIN SOLUTION`` line)::

        # YOUR CODE HERE
        raise NotImplementedError()

and lines between ``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS`` are removed (the instructor's
extra checks, re-inserted for grading). Outputs are cleared; cell ids and all other cells are kept, so a
submission's cells can be matched with the solution's by id. The same markup is what nbgrader's
``ClearSolutions`` and ``ClearHiddenTests`` read, so a course can move to nbgrader's ``generate_assignment``
later without touching the notebooks (it then also wants nbgrader's cell metadata).

    python -m labutils.student                  # every notebook -> student/
    python -m labutils.student 03 --out DIR     # only lab 03, into DIR
"""

from __future__ import annotations

import argparse
import copy
import re
from pathlib import Path

import nbformat

from .colab import add_delivery_cells
from .util import REPO_ROOT, atomic_write_text

__all__ = [
    "BEGIN_SOLUTION",
    "END_SOLUTION",
    "BEGIN_HIDDEN_TESTS",
    "END_HIDDEN_TESTS",
    "CODE_STUB",
    "MarkupError",
    "clear_solutions",
    "remove_hidden_tests",
    "exercise_cells",
    "exercise_names",
    "student_notebook",
    "with_hidden_tests",
    "generate",
]

BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN_TESTS, END_HIDDEN_TESTS = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"  # nbgrader's default stub for Python
TEXT_STUB = "YOUR ANSWER HERE"


class MarkupError(ValueError):
    """Unbalanced or nested BEGIN/END markers in a solution notebook."""


def _replace_regions(source: str, begin: str, end: str, stub: str | None, where: str) -> tuple[str, bool]:
    """Replace every begin..end region of ``source`` by ``stub`` (indented like the begin line) or by nothing."""
    lines, out, inside, found = source.split("\n"), [], False, False
    for number, line in enumerate(lines, start=1):
        if begin in line:
            if inside:
                raise MarkupError(f"{where}, line {number}: {begin!r} inside another {begin!r} region.")
            inside = found = True
            if stub is not None:
                indent = re.match(r"\s*", line).group(0)
                out.extend(indent + s for s in stub.split("\n"))
        elif end in line:
            if not inside:
                raise MarkupError(f"{where}, line {number}: {end!r} without a {begin!r} before it.")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise MarkupError(f"{where}: {begin!r} without a matching {end!r}.")
    return "\n".join(out), found


def clear_solutions(source: str, cell_type: str = "code", where: str = "cell") -> tuple[str, bool]:
    """``source`` with each solution region replaced by the stub; and whether there was one."""
    stub = CODE_STUB if cell_type == "code" else TEXT_STUB
    return _replace_regions(source, BEGIN_SOLUTION, END_SOLUTION, stub, where)


def remove_hidden_tests(source: str, where: str = "cell") -> tuple[str, bool]:
    """``source`` without its hidden-test regions; and whether there was one."""
    return _replace_regions(source, BEGIN_HIDDEN_TESTS, END_HIDDEN_TESTS, None, where)


def exercise_cells(nb) -> list[int]:
    """Indices of the code cells holding a solution region, in order. A markdown cell's solution region is a
    model answer to a question (cleared to ``YOUR ANSWER HERE`` like the rest), not an exercise with a check."""
    return [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code" and BEGIN_SOLUTION in cell.source]


def exercise_names(nb) -> list[str]:
    """What each exercise cell defines (its first top-level ``def`` or ``class`` name, else the cell id), in order."""
    names = []
    for index in exercise_cells(nb):
        cell = nb.cells[index]
        found = re.search(r"^(?:def|class)\s+(\w+)", cell.source, flags=re.MULTILINE)
        names.append(found.group(1) if found else str(cell.get("id", index)))
    return names


def student_notebook(nb, name: str = "notebook"):
    """A student copy of the solution notebook ``nb`` (an ``nbformat`` node; not modified)."""
    nb = copy.deepcopy(nb)
    for index, cell in enumerate(nb.cells):
        where = f"{name}, cell {index} (id {cell.get('id')})"
        cell.source, _ = clear_solutions(cell.source, cell.cell_type, where)
        cell.source, _ = remove_hidden_tests(cell.source, where)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nb


def with_hidden_tests(submission, solution):
    """The submission with every cell that holds hidden tests in ``solution`` replaced by the solution's cell.

    Cells are matched by id; those cells contain the visible checks and the hidden ones, never a solution, so
    the student's own code is kept. Raises ``ValueError`` if a hidden-test cell is missing from the submission.
    """
    graded = copy.deepcopy(submission)
    by_id = {cell.get("id"): cell for cell in graded.cells}
    for cell in solution.cells:
        if BEGIN_HIDDEN_TESTS not in cell.source:
            continue
        if BEGIN_SOLUTION in cell.source:
            raise MarkupError(f"Cell {cell.get('id')} mixes a solution and hidden tests: keep them in separate cells.")
        target = by_id.get(cell.get("id"))
        if target is None:
            raise ValueError(f"The submission has no cell with id {cell.get('id')!r}: was it deleted or recreated?")
        target.source = cell.source
    return graded


def _select(notebooks_dir: Path, labs: list[str] | None) -> list[Path]:
    paths = sorted(notebooks_dir.glob("[0-9][0-9]_*.ipynb"))
    if not labs:
        return paths
    chosen = [p for p in paths if any(p.stem == lab or p.stem.startswith(f"{lab}_") for lab in labs)]
    missing = [lab for lab in labs if not any(p.stem == lab or p.stem.startswith(f"{lab}_") for p in paths)]
    if missing:
        raise ValueError(f"No notebook for {missing} in {notebooks_dir}; available: {[p.stem for p in paths]}.")
    return chosen


def generate(out_dir=None, labs: list[str] | None = None, notebooks_dir=None) -> dict[str, list[str]]:
    """Write the student edition of every lab (or of ``labs``, e.g. ``["01", "03"]``) into ``out_dir``.

    A lab without exercises is copied too, with its outputs cleared, so that ``out_dir`` is the whole course a
    student receives. Defaults: ``notebooks/`` -> ``student/`` at the repository root. Returns
    ``{file name: names of its exercises}`` (see :func:`exercise_names`), in lab order.
    """
    notebooks_dir = Path(notebooks_dir) if notebooks_dir is not None else REPO_ROOT / "notebooks"
    out_dir = Path(out_dir) if out_dir is not None else REPO_ROOT / "student"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for path in _select(notebooks_dir, labs):
        nb = nbformat.read(path, as_version=4)
        student = student_notebook(nb, name=path.name)
        # The Open-in-Colab badge of the student's copy opens the student edition (student/NN_name.ipynb).
        student = add_delivery_cells(student, path.name, student=True, only_update=True)
        atomic_write_text(out_dir / path.name, nbformat.writes(student) + "\n")
        written[path.name] = exercise_names(nb)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m labutils.student", description="Write the student edition of the labs (exercises stubbed)."
    )
    parser.add_argument("labs", nargs="*", help="lab numbers or notebook stems (default: all)")
    parser.add_argument("--out", default=None, help="output folder (default: student/ at the repository root)")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else REPO_ROOT / "student"
    written = generate(out, args.labs or None)
    for name, exercises in written.items():
        what = f"{len(exercises)} exercise{'s' * (len(exercises) != 1)} ({', '.join(exercises)})"
        print(f"{out / name}: {what if exercises else 'no exercises, copied with outputs cleared'}")
    labs = [name.split("_")[0] for name, exercises in written.items() if exercises]
    total = sum(len(exercises) for exercises in written.values())
    print(
        f"Wrote {len(written)} notebooks to {out}: {total} exercises in labs {', '.join(labs) or '(none)'}; "
        f"{len(written) - len(labs)} without exercises."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
