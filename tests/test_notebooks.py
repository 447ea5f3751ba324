"""Every lab notebook: stored clean, parameterised for papermill, and executes in the quick profile.

Parametrised over the ``notebooks/`` folder, so a new lab is covered without editing this file.
The lab's own numbers are asserted in ``tests/test_nb_<NN>.py``.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import nbformat
import pytest

from conftest import notebook_paths, session_root
from labutils import colab, nbtools, student

NOTEBOOKS = notebook_paths()
NOTEBOOKS_DIR = NOTEBOOKS[0].parent
IDS = [p.stem for p in NOTEBOOKS]


def test_there_are_notebooks():
    assert NOTEBOOKS and NOTEBOOKS[0].stem == "00_setup_and_data"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_is_stored_without_outputs(path: Path):
    nb = json.loads(path.read_text())
    assert nbtools.stored_output_problems(nb) == [], f"{path.name} stores outputs: run `make strip`"
    assert all(
        c.get("execution_count") is None
        for c in nb["cells"]
        if c["cell_type"] == "code" and not nbtools.is_checked_cell(c)
    )
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


def test_every_lab_has_the_current_colab_badge_and_install_cell():
    assert colab.apply(NOTEBOOKS, check=True) == [], "run `python -m labutils.colab`"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_first_cells_are_the_badge_the_colab_install_and_the_papermill_parameters(path: Path):
    cells = json.loads(path.read_text())["cells"]
    assert cells[0]["id"] == colab.BADGE_CELL_ID and cells[0]["cell_type"] == "markdown"
    code = [c for c in cells if c["cell_type"] == "code"]
    assert code[0]["id"] == colab.INSTALL_CELL_ID
    first = code[1]
    source = "".join(first["source"])
    assert "parameters" in first["metadata"].get("tags", [])
    assert 'PROFILE = os.environ.get("LABS_PROFILE", "full")' in source
    assert "SEED = " in source


# Calls that train: the steps of a training loop and the labutils functions that run one.
TRAINING_CALLS = {"backward", "zero_grad", "step", "train_one_epoch", "fit", "run", "run_all"}


def training_calls_in_definitions(source: str) -> list[str]:
    """``name: call`` for every function, lambda or class in ``source`` whose body calls one of ``TRAINING_CALLS``."""
    code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
    found = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            for call in ast.walk(node):
                if isinstance(call, ast.Call):
                    func = call.func
                    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
                    if name in TRAINING_CALLS:
                        found.append(f"{getattr(node, 'name', 'lambda')}: {name}()")
    return found


def test_the_definition_check_finds_a_training_loop():
    loop = "def train(model, loader, opt):\n    for x, y in loader:\n        opt.zero_grad()\n        opt.step()\n"
    assert training_calls_in_definitions(loop) == ["train: zero_grad()", "train: step()"]
    assert training_calls_in_definitions("for x, y in loader:\n    loss.backward()\n") == []  # inline: allowed


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_no_function_defined_in_a_notebook_trains_a_model(path: Path):
    """Training runs through labutils (``experiment.run`` -> ``fit`` -> ``train_one_epoch``). Lab 04 writes its one
    epoch by hand inline, in a cell, not as a function a later cell could call instead of the package's loop."""
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    found = [hit for c in cells for hit in training_calls_in_definitions("".join(c["source"]))]
    assert found == [], f"{path.name} defines training code: {found}"


@pytest.mark.notebooks
@pytest.mark.parametrize("stem", IDS)
def test_notebook_runs_in_the_quick_profile_and_writes_its_results(stem, notebook_metrics):
    session_runs = session_root() / "runs"
    m = notebook_metrics(stem)
    assert m["notebook"] == stem and m["profile"] == "quick" and isinstance(m["seed"], int)
    assert m["versions"]["torch"] and m["versions"]["numpy"] and m["wall_time_s"] > 0
    assert m["metrics"] or m["tables"], "the lab recorded no numbers"
    for ds in m["datasets"].values():  # provenance is explicit, and a stand-in never passes for real data
        assert ds["source"] and ds["synthetic"] == ds["name"].endswith("-synthetic")
    assert m["synthetic_data"] == any(ds["synthetic"] for ds in m["datasets"].values())
    assert m["figures"], "the lab saved no figures"
    for fig in m["figures"]:
        png = session_runs / stem / fig["file"]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{png} is not a PNG"


@pytest.mark.notebooks
@pytest.mark.parametrize("stem", [s for s in IDS if s != "00_setup_and_data"])
def test_every_lab_records_references_beside_its_own_numbers(stem, notebook_metrics):
    from labutils.results import metric_at

    m = notebook_metrics(stem)
    assert m["references"], f"{stem} records no reference numbers to compare with"
    for ref in m["references"]:
        assert ref["what"] and ref["source"] and ref["reference"] is not None
    measured = [metric_at(m["metrics"], ref["metric"]) for ref in m["references"]]
    assert any(v is not None for v in measured), f"no reference of {stem} points at a number this run recorded"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_every_lab_builds_an_explorer(path: Path):
    nb = json.loads(path.read_text())
    calls = [c for c in nb["cells"] if c["cell_type"] == "code" and "explore.lab" in "".join(c["source"])]
    assert calls, f"{path.name} has no cell that builds an explorer (labutils.explore.labNN_...)"


@pytest.mark.notebooks
@pytest.mark.parametrize("stem", IDS)
def test_explorers_show_their_default_view_in_a_batch_run(stem, notebook_metrics):
    notebook_metrics(stem)  # executes the notebook once per session
    executed = json.loads((session_root() / "runs" / stem / f"{stem}.executed.ipynb").read_text())
    cells = [c for c in executed["cells"] if c["cell_type"] == "code" and "explore.lab" in "".join(c["source"])]
    for cell in cells:  # without a live kernel an explorer is its default view: a figure, and no error
        kinds = {key for out in cell["outputs"] for key in out.get("data", {})}
        assert "image/png" in kinds, f"{stem}: explorer cell {cell['id']} shows no figure"
        assert not any(out["output_type"] == "error" for out in cell["outputs"])
        text = "".join("".join(out.get("text", "")) for out in cell["outputs"])
        assert "Traceback" not in text


WITH_EXERCISES = [p.stem for p in NOTEBOOKS if student.exercise_cells(nbformat.read(p, as_version=4))]


@pytest.mark.notebooks
@pytest.mark.parametrize("stem", WITH_EXERCISES)
def test_every_visible_and_hidden_check_passes_in_the_run(stem, notebook_metrics):
    notebook_metrics(stem)  # executes the notebook once per session
    executed = nbformat.read(session_root() / "runs" / stem / f"{stem}.executed.ipynb", as_version=4)
    checks = [c for c in executed.cells if c.cell_type == "code" and student.BEGIN_HIDDEN_TESTS in c.source]
    assert len(checks) == len(student.exercise_cells(nbformat.read(NOTEBOOKS_DIR / f"{stem}.ipynb", as_version=4)))
    for cell in checks:  # the visible check and the hidden one both passed: each prints one "check_...:" line
        text = "".join(out.get("text", "") for out in cell.outputs)
        assert len([line for line in text.splitlines() if line.startswith("check_")]) == 2, text
