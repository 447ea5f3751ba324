"""labutils.site: the course website built from a lab run, never re-executing a notebook, with no network.

A small run is made here: one finished lab (an executed notebook whose stored outputs could not be produced by
running it again, a figure saved by LabResults) and one lab whose run failed. The site is built once, inside a
network namespace with no network when the machine allows one (root with ``unshare``), and its HTML read.
The browser test (tests/test_site_browser.py) views a site built from real labs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from labutils import colab, site
from labutils.results import LabResults, build_report
from labutils.util import REPO_ROOT

STORED = "stored output: 42 from the lab run"
NEVER = "this line only prints when the docs builder executes the notebook"
EXERCISE = "def answer():\n    ### BEGIN SOLUTION\n    return 'the secret solution'\n    ### END SOLUTION"
CHECK = "print('check passed')\n### BEGIN HIDDEN TESTS\nthe_hidden_test()\n### END HIDDEN TESTS"
QUESTION = "Why?\n### BEGIN SOLUTION\nThe model answer.\n### END SOLUTION"


def offline_prefix() -> list[str]:
    """``unshare -n`` (a new network namespace: no network at all) where it works, else nothing."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-n", "true"], capture_output=True).returncode == 0:
        return [unshare, "-n"]
    return []


def make_run(runs: Path, monkeypatch) -> None:
    """``runs/`` as `make labs` leaves it: 00_tiny finished with one figure; 01_broken failed (no metrics.json)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.setenv("LABS_RUNS", str(runs))
    res = LabResults("00_tiny", profile="quick", seed=0)
    res.dataset({"name": "mnist", "source": "mnist.pkl.gz", "synthetic": False})
    res["test_accuracy"] = 0.875
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    res.figure(fig, "curve", caption="A falling curve")
    plt.close(fig)
    res.save()
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Lab 00 — A tiny lab\n\nSome text."),
        nbformat.v4.new_code_cell(
            f'print("{NEVER}")',
            outputs=[nbformat.v4.new_output("stream", name="stdout", text=STORED + "\n")],
            execution_count=1,
        ),
        nbformat.v4.new_code_cell('res.figure(fig, "curve", caption="A falling curve")', execution_count=2),
        nbformat.v4.new_code_cell(EXERCISE, execution_count=3),
        nbformat.v4.new_code_cell(
            CHECK, execution_count=4, outputs=[nbformat.v4.new_output("stream", name="stdout", text="check passed\n")]
        ),
        nbformat.v4.new_markdown_cell(QUESTION),
    ]
    nbformat.write(nb, runs / "00_tiny" / "00_tiny.ipynb")
    (runs / "01_broken").mkdir()
    nbformat.write(nbformat.v4.new_notebook(), runs / "01_broken" / "01_broken.ipynb")
    build_report(runs, failures={"01_broken": "cell 3: ValueError: broken on purpose"})


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    with pytest.MonkeyPatch.context() as monkeypatch:
        make_run(root / "runs", monkeypatch)
    prefix = offline_prefix()
    command = [*prefix, sys.executable, "-m", "labutils.site", "--runs", str(root / "runs"), "--out", str(root / "out")]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return root / "out" / "html", done.stdout, bool(prefix)


def test_the_build_says_where_the_site_is_and_needs_no_network(built):
    html, printed, offline = built
    assert (html / "index.html").is_file()
    assert re.fullmatch(rf"Built the site in \d+ s: {re.escape(str(html / 'index.html'))} .*\n", printed)
    if not offline:
        pytest.skip("no network namespace here (needs root and unshare): built with the network present")


def test_landing_page_has_the_lab_table(built):
    html, _, _ = built
    page = (html / "index.html").read_text()
    row = re.search(r"<tr>\s*<td><a href=\"labs/00_tiny/\">Lab 00 — A tiny lab</a></td>(.*?)</tr>", page, re.S)
    assert row, "no table row linking to the lab page"
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(1), re.S)
    assert cells[0] == "<code>quick</code>" and cells[1] == "real" and cells[3] == "1"
    assert colab.colab_url("notebooks/00_tiny.ipynb") in cells[4]
    assert "Did not finish in this run (no page): <code>01_broken</code>." in page
    assert not (html / "labs" / "01_broken").exists()


def test_lab_page_shows_the_stored_outputs_and_the_runs_figure(built):
    html, _, _ = built
    page = (html / "labs" / "00_tiny" / "index.html").read_text()
    assert "<title>Lab 00 — A tiny lab - Deep Learning Labs</title>" in page
    outputs = re.findall(r'<div class="jp-RenderedText jp-OutputArea-output"[^>]*>\s*<pre>(.*?)</pre>', page, re.S)
    assert outputs == [STORED + "\n", "check passed\n"]  # what the run stored, not what a new run would print
    assert NEVER in page  # as source code only
    assert len(re.findall(r'<img[^>]+src="data:image/png;base64,', page)) == 1
    assert "A falling curve" in page
    assert "Traceback" not in page


def test_the_public_site_shows_no_solution_and_no_hidden_test(built):
    html, _, _ = built
    page = (html / "labs" / "00_tiny" / "index.html").read_text()
    text = re.sub(r"<[^>]+>", "", page)
    assert "the secret solution" not in text and "The model answer" not in text and "the_hidden_test" not in text
    assert "# YOUR CODE HERE" in text and "raise NotImplementedError()" in text and "YOUR ANSWER HERE" in text
    landing = (html / "index.html").read_text()
    assert "Exercise solutions are shown as the student's stub; every output is that of the full lab." in landing


def test_the_instructors_site_keeps_solutions_without_the_marker_lines():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(EXERCISE), nbformat.v4.new_code_cell(CHECK)]
    nb.cells.append(nbformat.v4.new_markdown_cell(QUESTION))
    shown = site._edition(nb, solutions=True)
    assert [c.source for c in shown.cells] == [
        "def answer():\n    return 'the secret solution'",
        "print('check passed')\nthe_hidden_test()",
        "Why?\nThe model answer.",
    ]


def test_report_page_has_the_tables_and_figures_of_report_md(built):
    html, _, _ = built
    page = (html / "report" / "index.html").read_text()
    assert page.count("<table>") >= 2  # the run table and the lab's metrics
    assert "test_accuracy" in page and "0.875" in page
    assert "broken on purpose" in page  # the failure REPORT.md lists
    [src] = re.findall(r'<img alt="A falling curve" src="([^"]+)"', page)
    assert (html / "report" / src).resolve() == (html / "00_tiny" / "curve.png").resolve()
    assert (html / "00_tiny" / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_a_lab_run_make_site_stops_with_one_sentence(tmp_path):
    message = f"No `make labs` run in {tmp_path / 'runs'} to build the site from: run `make labs` first."
    with pytest.raises(site.SiteError) as raised:
        site.build(tmp_path / "runs")
    assert str(raised.value) == message
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    venv = sys.prefix  # `-o`: the environment is taken as set up, never reinstalled by the test
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    env["LABS_RUNS"] = str(tmp_path / "runs")
    done = subprocess.run(
        ["make", "--no-print-directory", "-o", f"{venv}/.installed", "site", f"VENV={venv}"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    assert f"error: {message}" in done.stderr.splitlines()
