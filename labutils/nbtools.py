"""Notebook housekeeping: executing labs with papermill, and storing them clean.

``run_notebooks`` is what ``make labs`` and ``python -m labutils run`` call; ``strip_notebook`` is
what ``make strip`` calls. Stored notebooks carry no outputs except in cells marked
``# NBVAL_CHECK_OUTPUT`` (deterministic regression checks that nbval compares).
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
CHECK_MARK = "NBVAL_CHECK_OUTPUT"
CHECK_TAG = "nbval-check-output"
_VOLATILE_CELL_METADATA = ("execution", "papermill", "collapsed", "scrolled", "jupyter")


def lab_notebooks(directory: Path | None = None) -> list[Path]:
    """The lab notebooks (``NN_name.ipynb``) of a folder, in teaching order."""
    return sorted((directory or NOTEBOOK_DIR).glob("[0-9][0-9]_*.ipynb"))


def resolve_notebooks(names: list[str] | None, directory: Path | None = None) -> list[Path]:
    """Map ``["04", "05_residual_cnn", "notebooks/01_numpy_mlp.ipynb"]`` to notebook paths; all if empty."""
    available = lab_notebooks(directory)
    if not names:
        return available
    chosen = []
    for name in names:
        if name.endswith(".ipynb") and Path(name).is_file():
            chosen.append(Path(name).resolve())
            continue
        stem = Path(name).name.removesuffix(".ipynb")
        matches = [p for p in available if p.stem == stem or p.stem.split("_", 1)[0] == stem]
        if len(matches) != 1:
            known = ", ".join(p.stem for p in available) or "none"
            raise ValueError(f"No single notebook matches {name!r}: choose from {known}.")
        chosen.append(matches[0])
    return chosen


def parse_value(text: str) -> Any:
    """A ``-p NAME VALUE`` value: a Python literal (``3``, ``0.1``, ``[2, 8]``, ``None``) or else a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _text(cell: dict) -> str:
    return "".join(cell.get("source", ""))


def is_checked_cell(cell: dict) -> bool:
    source = _text(cell)
    return CHECK_MARK in source or CHECK_TAG in cell.get("metadata", {}).get("tags", [])


def stored_output_problems(nb: dict) -> list[int]:
    """Indices of code cells that store outputs without being nbval-checked cells."""
    return [
        i
        for i, cell in enumerate(nb.get("cells", []))
        if cell.get("cell_type") == "code" and cell.get("outputs") and not is_checked_cell(cell)
    ]


def strip_notebook(nb: dict) -> dict:
    """Remove outputs (except nbval-checked cells), execution counts and run-specific metadata, in place."""
    for cell in nb.get("cells", []):
        meta = cell.get("metadata", {})
        for key in _VOLATILE_CELL_METADATA:
            meta.pop(key, None)
        if cell.get("cell_type") != "code":
            continue
        if is_checked_cell(cell) and cell.get("outputs"):
            # nbval skips a reference cell without an execution count; 1 keeps diffs stable.
            cell["execution_count"] = 1
            for out in cell["outputs"]:
                if "execution_count" in out:
                    out["execution_count"] = 1
        else:
            cell["outputs"] = []
            cell["execution_count"] = None
    for key in ("papermill", "widgets"):
        nb.get("metadata", {}).pop(key, None)
    return nb


def strip_file(path: Path, check: bool = False) -> bool:
    """Strip one notebook file; returns True if it was (or, with ``check``, would be) changed."""
    before = path.read_text()
    nb = json.loads(before)
    after = json.dumps(strip_notebook(nb), indent=1, ensure_ascii=False) + "\n"
    changed = json.loads(after) != json.loads(before)
    if changed and not check:
        path.write_text(after)
    return changed


def record_checked_outputs(source: Path, executed: Path) -> int:
    """Copy the outputs of nbval-checked cells from an executed copy into the stored notebook, then strip it.

    This is how a lab author refreshes the expected output of its regression cells. Returns how many
    cells were recorded. The two notebooks must have the same cells in the same order.
    """
    stored, ran = json.loads(source.read_text()), json.loads(executed.read_text())
    ran_cells = [c for c in ran["cells"] if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    if [_text(c) for c in ran_cells] != [_text(c) for c in stored["cells"]]:
        raise ValueError(f"{executed} is not an execution of the current {source.name}: re-run it first.")
    count = 0
    for cell, done in zip(stored["cells"], ran_cells):
        if cell.get("cell_type") == "code" and is_checked_cell(cell):
            cell["outputs"] = done.get("outputs", [])
            count += 1
    source.write_text(json.dumps(strip_notebook(stored), indent=1, ensure_ascii=False) + "\n")
    return count


@dataclass
class NotebookRun:
    stem: str
    ok: bool
    seconds: float
    output: Path
    error: str = ""


def describe_failure(exc: BaseException) -> str:
    """'cell 7: ValueError: ...' from a papermill execution error; the bare message otherwise."""
    cell = getattr(exc, "exec_count", None) or getattr(exc, "cell_index", None)
    ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
    if ename:
        where = f"cell {cell}" if cell is not None else "a cell"
        return f"{where}: {ename}: {evalue}"
    return f"{type(exc).__name__}: {exc}"


def run_notebooks(
    paths: list[Path],
    profile: str,
    parameters: dict[str, Any] | None = None,
    runs: Path | None = None,
    progress: bool = True,
) -> list[NotebookRun]:
    """Execute notebooks with papermill into ``runs/<stem>/<stem>.ipynb`` and write ``runs/REPORT.md``.

    A failing notebook does not stop the others; its cell and error are reported and listed in the report.
    """
    from tqdm.auto import tqdm

    from labutils import check_profile
    from labutils.results import build_report, runs_dir

    check_profile(profile)
    runs = Path(runs or runs_dir())
    results: list[NotebookRun] = []
    bar = tqdm(paths, desc="labs", unit="notebook", disable=not progress)
    with _environment(LABS_RUNS=str(runs), MPLBACKEND=os.environ.get("MPLBACKEND", "Agg")):  # kernels inherit it
        for path in bar:
            bar.set_postfix_str(path.stem)
            results.append(_run_one(path, profile, parameters, runs))
            if not results[-1].ok:
                bar.write(f"FAILED {path.stem} in {results[-1].error}")
    build_report(runs, failures={r.stem: r.error for r in results if not r.ok})
    return results


@contextlib.contextmanager
def _environment(**values: str):
    """Set environment variables for the kernels started inside, and restore them afterwards."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run_one(path: Path, profile: str, parameters: dict[str, Any] | None, runs: Path) -> NotebookRun:
    """Execute one notebook into ``runs/<stem>/<stem>.ipynb``; a failure is returned, not raised."""
    import papermill as pm

    out = runs / path.stem / f"{path.stem}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    (out.parent / "metrics.json").unlink(missing_ok=True)  # a failed run must not report stale numbers
    start = time.perf_counter()
    try:
        pm.execute_notebook(
            str(path),
            str(out),
            parameters={"PROFILE": profile, **(parameters or {})},
            cwd=str(path.parent),
            kernel_name="python3",
            progress_bar=False,
        )
    except Exception as exc:  # report and go on: one broken lab must not hide the others
        return NotebookRun(path.stem, False, time.perf_counter() - start, out, describe_failure(exc))
    return NotebookRun(path.stem, True, time.perf_counter() - start, out)
