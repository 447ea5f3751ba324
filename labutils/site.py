"""The course website: the labs as a run left them (outputs and figures), built by mkdocs with mkdocs-jupyter.

    make labs && make site                   # runs/ -> runs/site/html/index.html
    python -m labutils.site [--runs DIR] [--out DIR] [--solutions]

The pages come from the last ``make labs`` run (``runs/<stem>/<stem>.ipynb``, its ``metrics.json`` and
``runs/REPORT.md``); the site builder never executes a notebook, so the site shows exactly the outputs of that
run, in the profile it ran in. The site has

- a landing page with the lab table (title, profile, real or synthetic data, wall time, figures, Open in Colab),
- one page per lab that finished: the executed notebook with its outputs and figures,
- the run report (REPORT.md: the tables and figures of every lab) as a page.

A public site must not hand out the answers: the exercises' code shows the student's stub and the hidden tests are
left out, while every output stays that of the full run. ``--solutions`` builds the instructors' site instead.

A lab that failed in that run has no page; the landing page says so. The build needs no network: mkdocs,
mkdocs-material and mkdocs-jupyter come from the package index, the theme's web fonts are switched off, and a
page only refers to outside addresses (MathJax, the widget manager) when a browser views it.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat

from .colab import BADGE_IMAGE, colab_url, repository_path
from .results import METRICS_FILE
from .student import (
    BEGIN_HIDDEN_TESTS,
    BEGIN_SOLUTION,
    END_HIDDEN_TESTS,
    END_SOLUTION,
    clear_solutions,
    remove_hidden_tests,
)
from .util import atomic_write_text, runs_dir

__all__ = ["SITE_NAME", "SiteError", "lab_runs", "stage", "build", "main"]

SITE_NAME = "Deep Learning Labs"
LAB_DIR = "labs"  # lab pages: labs/<stem>/


class SiteError(RuntimeError):
    """The site cannot be built from what is in the runs folder (no run yet, or mkdocs failed)."""


def lab_runs(runs: Path) -> dict[str, Path | None]:
    """``{stem: executed notebook}`` of every lab in ``runs``, in lab order; None for a lab whose run did not
    finish (its notebook is there but no metrics.json)."""
    found = {}
    for folder in sorted(p for p in runs.glob("[0-9][0-9]_*") if p.is_dir()):
        executed = folder / f"{folder.name}.ipynb"
        if executed.is_file():
            found[folder.name] = executed if (folder / METRICS_FILE).is_file() else None
    return found


def _title(nb, stem: str) -> str:
    """The lab's title: its first markdown heading ("Lab 04 — Residual connections: ..."), else the stem."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return stem


_FIGURE_CALL = re.compile(r"""\.figure\(\s*\w+\s*,\s*(f?)(["'])(.*?)\2""")


def _figure_patterns(source: str) -> list[re.Pattern]:
    """The file names a cell saves figures under, from its ``res.figure(fig, "name", ...)`` calls; an f-string
    name (``f"samples_{name}"``) matches any text in place of each ``{...}``."""
    patterns = []
    for is_f, _, name in _FIGURE_CALL.findall(source):
        parts = re.split(r"\{[^}]*\}", name) if is_f else [name]
        patterns.append(re.compile(".+".join(re.escape(p) for p in parts) + r"\.png"))
    return patterns


def _with_figures(nb, figures: list[dict], folder: Path):
    """``nb`` with each figure the run saved (``metrics.json``'s ``figures``: file and caption) shown as an output
    of the cell that saved it, or at the end when no cell names it.

    ``make labs`` runs the kernels with matplotlib's Agg backend, so the executed notebooks hold no pictures of
    their own; the PNG files beside them are the figures of that same run. A cell already showing a picture
    keeps it and gets no copy.
    """
    cells = [(cell, _figure_patterns(cell.source)) for cell in nb.cells if cell.cell_type == "code"]
    pictured = [cell for cell, _ in cells if any("image/png" in o.get("data", {}) for o in cell.outputs)]
    leftover = []
    for figure in figures:
        path = folder / figure["file"]
        if not path.is_file():
            continue
        owner = next((cell for cell, patterns in cells if any(p.fullmatch(figure["file"]) for p in patterns)), None)
        if any(owner is cell for cell in pictured):
            continue
        outputs = [
            nbformat.v4.new_output("display_data", data={"image/png": base64.b64encode(path.read_bytes()).decode()}),
            nbformat.v4.new_output("display_data", data={"text/markdown": f"*{figure.get('caption', '')}*"}),
        ]
        if owner is None:
            leftover += outputs
        else:
            owner.outputs += outputs
    if leftover:
        nb.cells.append(nbformat.v4.new_markdown_cell("## Figures of this run"))
        nb.cells.append(nbformat.v4.new_code_cell("# saved by the cells above", outputs=leftover))
    return nb


def _edition(nb, solutions: bool):
    """The notebook as the site shows it, outputs kept: without ``solutions``, each exercise's solution replaced by
    the student's stub and the hidden tests removed (a public site must not hand out the answers); with them, the
    instructor's code with only the marker lines taken out."""
    markers = (BEGIN_SOLUTION, END_SOLUTION, BEGIN_HIDDEN_TESTS, END_HIDDEN_TESTS)
    for index, cell in enumerate(nb.cells):
        if solutions:
            cell.source = "\n".join(line for line in cell.source.split("\n") if not any(m in line for m in markers))
        else:
            where = f"cell {index} (id {cell.get('id')})"
            cell.source = remove_hidden_tests(clear_solutions(cell.source, cell.cell_type, where)[0], where)[0]
    return nb


def _landing_page(labs: list[dict], failed: list[str], runs: Path, solutions: bool) -> str:
    out = [
        f"# {SITE_NAME}",
        "",
        "Each lab as its last run left it: the notebook with its outputs and figures. Open a lab in Colab to run "
        "it yourself; the [run report](report.md) has every lab's numbers in tables.",
        "",
        "| Lab | Profile | Data | Wall time | Figures | Run it |",
        "|---|---|---|---:|---:|---|",
    ]
    for lab in labs:
        m = lab["metrics"]
        data = "synthetic stand-in" if m.get("synthetic_data") else ("real" if m.get("datasets") else "none")
        badge = f"[![Open In Colab]({BADGE_IMAGE})]({colab_url(repository_path(lab['stem'] + '.ipynb'))})"
        out.append(
            f"| [{lab['title']}]({LAB_DIR}/{lab['stem']}.ipynb) | `{m.get('profile', '?')}` | {data} | "
            f"{float(m.get('wall_time_s', 0)):.0f} s | {len(m.get('figures', []))} | {badge} |"
        )
    if failed:
        out += ["", f"Did not finish in this run (no page): {', '.join(f'`{s}`' for s in failed)}."]
    if not solutions:
        out += ["", "Exercise solutions are shown as the student's stub; every output is that of the full lab."]
    out += ["", f"Built from `{runs}` on {time.strftime('%Y-%m-%d %H:%M')}."]
    return "\n".join(out) + "\n"


def _config(docs: Path, nav: list) -> dict:
    return {
        "site_name": SITE_NAME,
        "docs_dir": str(docs),
        "use_directory_urls": True,
        "theme": {"name": "material", "font": False},  # font: False -> no web fonts fetched from outside
        "nav": nav,
        "markdown_extensions": ["tables", "toc"],
        "plugins": [
            "search",
            {
                "mkdocs-jupyter": {
                    "include": ["*.ipynb"],
                    "execute": False,  # the outputs are those of the `make labs` run
                    "include_source": True,
                    "cache": False,
                }
            },
        ],
    }


def stage(runs: Path, out: Path, solutions: bool = False) -> Path:
    """Lay out the site's sources in ``out/docs`` and its configuration in ``out/mkdocs.yml``; return the latter.
    ``solutions``: show the exercises' solutions and hidden tests (see :func:`_edition`).

    Raises :class:`SiteError` if ``runs`` holds no finished lab run.
    """
    runs, out = Path(runs), Path(out)
    found = lab_runs(runs) if runs.is_dir() else {}
    finished = {stem: path for stem, path in found.items() if path is not None}
    if not finished or not (runs / "REPORT.md").is_file():
        raise SiteError(f"No `make labs` run in {runs} to build the site from: run `make labs` first.")
    docs = out / "docs"
    shutil.rmtree(docs, ignore_errors=True)
    (docs / LAB_DIR).mkdir(parents=True)
    labs = []
    for stem, executed in finished.items():
        metrics = json.loads((runs / stem / METRICS_FILE).read_text())
        nb = _edition(nbformat.read(executed, as_version=4), solutions)
        nb = _with_figures(nb, metrics.get("figures", []), runs / stem)
        atomic_write_text(docs / LAB_DIR / executed.name, nbformat.writes(nb))
        for figure in (runs / stem).glob("*.png"):  # REPORT.md shows them as <stem>/<file>.png
            (docs / stem).mkdir(exist_ok=True)
            shutil.copyfile(figure, docs / stem / figure.name)
        labs.append({"stem": stem, "title": _title(nb, stem), "metrics": metrics})
    failed = [stem for stem, path in found.items() if path is None]
    atomic_write_text(docs / "index.md", _landing_page(labs, failed, runs, solutions))
    shutil.copyfile(runs / "REPORT.md", docs / "report.md")
    nav = [
        {"Home": "index.md"},
        {"Labs": [{lab["title"]: f"{LAB_DIR}/{lab['stem']}.ipynb"} for lab in labs]},
        {"Run report": "report.md"},
    ]
    config = out / "mkdocs.yml"
    atomic_write_text(config, json.dumps(_config(docs, nav), indent=2, ensure_ascii=False) + "\n")  # JSON is YAML
    return config


def build(runs=None, out=None, solutions: bool = False) -> Path:
    """Build the site from the lab run in ``runs`` (default: ``runs/``) into ``out/html`` (default:
    ``runs/site``); return the path of its ``index.html``. Raises :class:`SiteError` with one sentence."""
    runs = Path(runs) if runs is not None else runs_dir()
    out = Path(out) if out is not None else runs / "site"
    config = stage(runs, out, solutions)
    html = out / "html"
    command = [sys.executable, "-m", "mkdocs", "build", "--clean", "--strict", "-f", str(config), "-d", str(html)]
    # NO_MKDOCS_2_WARNING: mkdocs-material's banner about its successor, printed on every build
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(command, capture_output=True, text=True, cwd=out, env=env)
    if done.returncode != 0:
        raise SiteError(f"mkdocs could not build the site from {config}:\n{done.stderr.strip()[-3000:]}")
    return html / "index.html"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labutils.site", description="Build the course website.")
    parser.add_argument("--runs", type=Path, default=None, help="the `make labs` run (default: runs/ or $LABS_RUNS)")
    parser.add_argument("--out", type=Path, default=None, help="where the site goes (default: <runs>/site)")
    parser.add_argument("--solutions", action="store_true", help="show the exercises' solutions (instructors' site)")
    args = parser.parse_args(argv)
    start = time.monotonic()
    try:
        index = build(args.runs, args.out, args.solutions)
    except SiteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    seconds = time.monotonic() - start
    print(f"Built the site in {seconds:.0f} s: {index} (to serve it: python -m http.server -d {index.parent})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
