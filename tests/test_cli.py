"""``python -m labutils``: run (with failure reporting), data, strip, record."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from labutils import nbtools
from labutils.__main__ import main

REPO = Path(__file__).resolve().parents[1]


def _notebook(path: Path, body: str, checked: str | None = None) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell("import os\nPROFILE = os.environ.get('LABS_PROFILE', 'full')\nSEED = 0\nN = 3")
    params.metadata["tags"] = ["parameters"]
    cells = [params, nbformat.v4.new_code_cell(body)]
    if checked:
        cells.append(nbformat.v4.new_code_cell(checked))
    nb.cells = cells
    nbformat.write(nb, str(path))
    return path


GOOD = """
from labutils.results import LabResults
res = LabResults(STEM, profile=PROFILE, seed=SEED, params={"n": N})
res["n_squared"] = N * N
res.save()
"""


def test_run_executes_notebooks_with_parameters_and_writes_the_report(tmp_path):
    good = _notebook(tmp_path / "91_good.ipynb", "STEM = '91_good'\n" + GOOD)
    bad = _notebook(tmp_path / "92_bad.ipynb", "x = 1\n\nraise ValueError('depth must be >= 1, got 0')")
    runs = tmp_path / "runs"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "labutils",
            "run",
            str(good),
            str(bad),
            "--profile",
            "quick",
            "-p",
            "N",
            "5",
            "--runs",
            str(runs),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    metrics = json.loads((runs / "91_good" / "metrics.json").read_text())
    assert metrics["profile"] == "quick" and metrics["metrics"]["n_squared"] == 25
    assert (runs / "91_good" / "91_good.ipynb").exists()
    assert "92_bad" in proc.stdout and "ValueError: depth must be >= 1, got 0" in proc.stdout
    assert "cell" in proc.stdout.split("92_bad")[-1]
    report = (runs / "REPORT.md").read_text()
    assert "## 91_good" in report and "`92_bad`: cell" in report


def test_unknown_notebook_and_profile_give_one_line(capsys):
    assert main(["run", "99_nothing"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: No single notebook matches '99_nothing'") and err.count("\n") == 1
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--profile", "medium"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'medium'" in capsys.readouterr().err


def test_data_command_reports_every_dataset(capsys, monkeypatch):
    from labutils import data

    monkeypatch.setattr(data, "network_reachable", lambda *a, **k: False)
    assert main(["data", "mnist", "cifar10"]) == 0
    out = capsys.readouterr().out
    assert "mnist       ok" in out and "cifar10     missing" in out and "cifar-10-python.tar.gz" in out
    assert main(["data", "imagenet"]) == 2


def test_strip_keeps_only_checked_outputs(tmp_path):
    path = _notebook(tmp_path / "93_x.ipynb", "print(1)", checked="# NBVAL_CHECK_OUTPUT\nprint(2)")
    nb = json.loads(path.read_text())
    stream = {"output_type": "stream", "name": "stdout", "text": ["1\n"]}
    for cell in nb["cells"][1:]:
        cell["outputs"], cell["execution_count"] = [dict(stream)], 4
    nb["cells"][1]["metadata"]["execution"] = {"iopub.status.busy": "2026-01-01"}
    path.write_text(json.dumps(nb))
    assert nbtools.stored_output_problems(nb) == [1]
    assert nbtools.strip_file(path, check=True) is True
    assert nbtools.strip_file(path) is True
    cleaned = json.loads(path.read_text())
    assert cleaned["cells"][1]["outputs"] == [] and cleaned["cells"][1]["execution_count"] is None
    assert cleaned["cells"][2]["outputs"] == [stream] and "execution" not in cleaned["cells"][1]["metadata"]
    assert cleaned["cells"][2]["execution_count"] == 1  # nbval compares only cells with a count
    assert nbtools.strip_file(path, check=True) is False


def test_record_stores_the_output_of_checked_cells(tmp_path):
    path = _notebook(tmp_path / "94_rec.ipynb", "y = N + 1", checked="# NBVAL_CHECK_OUTPUT\nprint('y =', y)")
    [run] = nbtools.run_notebooks([path], "quick", runs=tmp_path / "runs", progress=False)
    assert run.ok, run.error
    assert nbtools.record_checked_outputs(path, run.output) == 1
    cells = json.loads(path.read_text())["cells"]
    assert cells[2]["outputs"][0]["text"] == ["y = 4\n"] and cells[1]["outputs"] == []


@pytest.mark.parametrize("text, value", [("3", 3), ("0.5", 0.5), ("[2, 8]", [2, 8]), ("None", None), ("adam", "adam")])
def test_parameter_values_parse_as_literals_or_strings(text, value):
    assert nbtools.parse_value(text) == value


def test_nbval_fails_when_a_checked_output_changes(tmp_path):
    """The regression cells are real checks: a stored output that no longer matches fails the suite."""
    path = _notebook(tmp_path / "95_check.ipynb", "y = N * 2", checked="# NBVAL_CHECK_OUTPUT\nprint('y =', y)")
    [run] = nbtools.run_notebooks([path], "quick", runs=tmp_path / "runs", progress=False)
    nbtools.record_checked_outputs(path, run.output)
    ok = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert ok.returncode == 0, ok.stdout[-2000:]
    nb = json.loads(path.read_text())
    nb["cells"][2]["outputs"][0]["text"] = ["y = 7\n"]
    path.write_text(json.dumps(nb))
    changed = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert changed.returncode == 1 and "y = 7" in changed.stdout
