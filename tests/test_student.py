"""labutils.student: the student edition generated from the solution notebooks.

The markup is transformed like nbgrader's ClearSolutions / ClearHiddenTests. Every lab whose notebook marks an
exercise (found from the markup, not listed here) runs its set-up cells, first exercise and check in the student
edition, and the check fails on the stub; with the solutions and hidden tests put back it is the solution notebook,
code cell for code cell, whose quick-profile run passes every check (tests/test_notebooks.py). Labs without exercises
are copied with their outputs cleared.
"""

from __future__ import annotations

import contextlib
import copy
import io

import nbformat
import pytest

from labutils import colab, student
from labutils.student import BEGIN_HIDDEN_TESTS, BEGIN_SOLUTION, CODE_STUB, MarkupError
from labutils.util import REPO_ROOT

NOTEBOOKS = REPO_ROOT / "notebooks"
SOLUTIONS = {path.stem: nbformat.read(path, as_version=4) for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))}
LABS = {stem: len(student.exercise_cells(nb)) for stem, nb in SOLUTIONS.items() if student.exercise_cells(nb)}
PLAIN = [stem for stem in SOLUTIONS if stem not in LABS]  # labs without exercises

EXERCISE = '''def f(x):
    """Docstring stays."""
    y = 2  # a given line stays too
    ### BEGIN SOLUTION
    return x * y
    ### END SOLUTION'''


def test_solution_region_becomes_the_indented_stub():
    source, found = student.clear_solutions(EXERCISE)
    assert found
    assert source == 'def f(x):\n    """Docstring stays."""\n    y = 2  # a given line stays too\n' + "\n".join(
        "    " + line for line in CODE_STUB.split("\n")
    )
    namespace = {}
    exec(source, namespace)
    with pytest.raises(NotImplementedError):
        namespace["f"](1)


def test_two_regions_in_one_cell_and_markdown_answers():
    two = "class A:\n    def f(self):\n        ### BEGIN SOLUTION\n        return 1\n        ### END SOLUTION\n\n" * 2
    source, _ = student.clear_solutions(two)
    assert source.count("raise NotImplementedError()") == 2 and "return 1" not in source
    text, found = student.clear_solutions("Why?\n### BEGIN SOLUTION\nBecause.\n### END SOLUTION", "markdown")
    assert found and text == "Why?\nYOUR ANSWER HERE"


def test_hidden_tests_are_removed_and_other_cells_untouched():
    source, found = student.remove_hidden_tests(
        "check(f)\n### BEGIN HIDDEN TESTS\ncheck(f, seed=1)\n### END HIDDEN TESTS"
    )
    assert found and source == "check(f)"
    assert student.clear_solutions("x = 1") == ("x = 1", False)
    assert student.remove_hidden_tests("x = 1") == ("x = 1", False)


@pytest.mark.parametrize(
    "source, message",
    [
        ("### BEGIN SOLUTION\nx = 1", "without a matching"),
        ("x = 1\n### END SOLUTION", "line 2: '### END SOLUTION' without"),
        ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION", "line 2: '### BEGIN SOLUTION' inside"),
    ],
)
def test_unbalanced_markup_is_refused_with_the_line(source, message):
    with pytest.raises(MarkupError, match=message):
        student.clear_solutions(source, where="nb.ipynb, cell 3")


def test_student_notebook_clears_outputs_keeps_ids_and_leaves_the_solution_alone():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Lab"),
        nbformat.v4.new_code_cell(EXERCISE),
        nbformat.v4.new_code_cell("check(f)\n### BEGIN HIDDEN TESTS\ncheck(f, seed=1)\n### END HIDDEN TESTS"),
    ]
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", text="ok\n")]
    nb.cells[2].execution_count = 3
    before = copy.deepcopy(nb)
    out = student.student_notebook(nb)
    assert nb == before  # the solution notebook is not modified
    assert [c.id for c in out.cells] == [c.id for c in nb.cells]
    assert out.cells[2].source == "check(f)" and out.cells[2].outputs == [] and out.cells[2].execution_count is None
    assert student.exercise_cells(nb) == [1] and student.exercise_cells(out) == []
    graded = student.with_hidden_tests(out, nb)
    assert graded.cells[2].source == nb.cells[2].source and graded.cells[1].source == out.cells[1].source
    out.cells[2].id = "recreated"
    with pytest.raises(ValueError, match="no cell with id"):
        student.with_hidden_tests(out, nb)


def test_a_model_answer_in_markdown_is_cleared_but_is_no_exercise():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("Why?\n### BEGIN SOLUTION\nBecause.\n### END SOLUTION"),
        nbformat.v4.new_code_cell(EXERCISE),
    ]
    assert student.exercise_cells(nb) == [1]
    assert student.student_notebook(nb).cells[0].source == "Why?\nYOUR ANSWER HERE"


def test_unknown_lab_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"No notebook for \['99'\]"):
        student.generate(tmp_path, ["99"])


def test_labs_with_exercises_are_found_from_the_markup():
    assert {"01_numpy_mlp", "02_backprop_and_optimizers", "03_numpy_cnn", "04_residual_mlp"} <= set(LABS)
    assert LABS["02_backprop_and_optimizers"] == 3 and LABS["04_residual_mlp"] == 1


@pytest.mark.parametrize("stem", LABS)
def test_every_exercise_is_followed_by_its_check_with_hidden_tests(stem):
    cells = SOLUTIONS[stem].cells
    for index in student.exercise_cells(SOLUTIONS[stem]):
        check = next((c for c in cells[index + 1 :] if "checks.check_" in c.source), None)
        assert check is not None, f"{stem}: exercise cell {cells[index].id} has no check after it"
        assert BEGIN_HIDDEN_TESTS in check.source and BEGIN_SOLUTION not in check.source, check.id
        assert check.id != cells[index].id
    hidden = [c for c in cells if BEGIN_HIDDEN_TESTS in c.source]
    assert len(hidden) == LABS[stem]


@pytest.fixture(scope="module")
def edition(tmp_path_factory):
    """The student edition of every lab, written by the command line entry point; and what it printed."""
    out = tmp_path_factory.mktemp("student")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert student.main(["--out", str(out)]) == 0
    return out, printed.getvalue()


def test_the_command_says_what_it_wrote(edition):
    out, printed = edition
    lines = printed.strip().splitlines()
    assert len(lines) == len(SOLUTIONS) + 1
    for stem in LABS:
        names = ", ".join(student.exercise_names(SOLUTIONS[stem]))
        count = LABS[stem]
        assert f"{out / stem}.ipynb: {count} exercise{'s' if count != 1 else ''} ({names})" in lines
    for stem in PLAIN:
        assert f"{out / stem}.ipynb: no exercises, copied with outputs cleared" in lines
    labs = ", ".join(stem[:2] for stem in LABS)
    assert lines[-1] == (
        f"Wrote {len(SOLUTIONS)} notebooks to {out}: {sum(LABS.values())} exercises in labs {labs}; "
        f"{len(PLAIN)} without exercises."
    )
    assert "MyResidualBlock" in student.exercise_names(SOLUTIONS["04_residual_mlp"])


@pytest.mark.parametrize("stem", PLAIN)
def test_lab_without_exercises_is_copied_with_outputs_cleared(edition, stem):
    solution, generated = SOLUTIONS[stem], nbformat.read(edition[0] / f"{stem}.ipynb", as_version=4)
    solution = colab.add_delivery_cells(solution, f"{stem}.ipynb", student=True, only_update=True)  # badge retargeted
    # model answers to questions (markdown) are cleared; every other cell is copied as it is
    expected = [(c.id, student.clear_solutions(c.source, c.cell_type)[0]) for c in solution.cells]
    assert [(c.id, c.source) for c in generated.cells] == expected
    assert all(c.outputs == [] and c.execution_count is None for c in generated.cells if c.cell_type == "code")


@pytest.mark.parametrize("stem", LABS)
def test_generated_lab_has_stubs_and_no_solutions(edition, stem):
    solution = SOLUTIONS[stem]
    generated = nbformat.read(edition[0] / f"{stem}.ipynb", as_version=4)
    nbformat.validate(generated)
    assert [c.id for c in generated.cells] == [c.id for c in solution.cells]
    text = "\n".join(c.source for c in generated.cells)
    assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text
    assert text.count("raise NotImplementedError()") >= LABS[stem]
    assert all(c.outputs == [] for c in generated.cells if c.cell_type == "code")  # nbval-checked outputs too
    for index in student.exercise_cells(solution):
        kept = solution.cells[index].source.split(BEGIN_SOLUTION)[0].rstrip(" ")  # signature, docstring
        assert generated.cells[index].source.startswith(kept)


def _run(path, tmp_path, monkeypatch):
    import papermill as pm

    from labutils.nbtools import papermill_engine

    monkeypatch.setenv("LABS_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("LABS_PROFILE", "quick")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / f"executed-{path.name}"
    pm.execute_notebook(
        str(path),
        str(out),
        parameters={"PROFILE": "quick"},
        cwd=str(NOTEBOOKS),
        kernel_name="python3",
        engine_name=papermill_engine(),
        progress_bar=False,
        log_output=False,
    )
    return nbformat.read(out, as_version=4)


def setup_cells(nb) -> list[int]:
    """Indices of the lab's set-up code cells: those before its first numbered section (install, parameters,
    imports and knobs)."""
    first_section = next(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and c.source.startswith("## "))
    return [i for i in range(first_section) if nb.cells[i].cell_type == "code"]


@pytest.mark.notebooks
@pytest.mark.parametrize("stem", LABS)
def test_student_lab_runs_its_first_exercise_and_check_which_fails_on_the_stub(edition, stem, tmp_path, monkeypatch):
    from papermill.exceptions import PapermillExecutionError

    nb = nbformat.read(edition[0] / f"{stem}.ipynb", as_version=4)
    solution = SOLUTIONS[stem]
    first = min(student.exercise_cells(solution))
    check = next(i for i in range(first + 1, len(nb.cells)) if "checks.check_" in nb.cells[i].source)
    # Every code cell before the exercise is the solution's own, which the notebook test ran to the end; here the
    # set-up cells run, then the stubbed exercise and its check, as a student's kernel would run them.
    before = [(c.id, c.source) for c in nb.cells[:first] if c.cell_type == "code"]
    assert before == [(c.id, c.source) for c in solution.cells[:first] if c.cell_type == "code"]
    kept = setup_cells(nb) + list(range(first, check + 1))
    nb.cells = [nb.cells[i] for i in kept]
    path = tmp_path / f"{stem}.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(PapermillExecutionError) as info:
        _run(path, tmp_path, monkeypatch)
    assert info.value.ename == "CheckFailed" and "YOUR CODE HERE" in info.value.evalue
    assert info.value.cell_index == len(kept)  # the check, the last cell (papermill inserted one parameters cell)


@pytest.mark.parametrize("stem", LABS)
def test_student_lab_with_solutions_put_back_is_the_solution(edition, stem):
    solution = SOLUTIONS[stem]
    submission = nbformat.read(edition[0] / f"{stem}.ipynb", as_version=4)
    answers = {solution.cells[i].id: solution.cells[i].source for i in student.exercise_cells(solution)}
    for cell in submission.cells:
        cell.source = answers.get(cell.id, cell.source)
    graded = student.with_hidden_tests(submission, solution)
    # Code for code, the student edition with the answers and hidden tests put back is the solution notebook,
    # whose quick-profile run passes every check (tests/test_notebooks.py).
    code = [(c.id, c.source) for c in graded.cells if c.cell_type == "code"]
    assert code == [(c.id, c.source) for c in solution.cells if c.cell_type == "code"]
    assert sum(BEGIN_HIDDEN_TESTS in source for _, source in code) == LABS[stem]
