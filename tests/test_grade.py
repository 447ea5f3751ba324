"""labutils.grade: submissions run with the hidden tests put back, scored per exercise, whatever they do.

The end-to-end test grades three submissions made from the real student edition of lab 02 (generated here with
labutils.student): all correct, one exercise wrong, one infinite loop. It runs the command line in a process of
its own with a hard limit, so a grader that hangs fails the test instead of hanging it. The other tests check
the matching of cells and the messages on small notebooks, without a kernel.
"""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from labutils import grade, student
from labutils.grade import Exercise
from labutils.student import BEGIN_SOLUTION, END_SOLUTION
from labutils.util import REPO_ROOT

LAB = "02_backprop_and_optimizers"
FIXTURES = Path(__file__).parent / "fixtures" / "grading"
TIMEOUT_S = 30  # per notebook; a correct lab 02 reaches its last check in about 10 s on an idle 2-core machine
HARD_LIMIT_S = 180  # the whole grading run, loaded machine included; past this the grader is broken

# A classic mistake: Adam without the bias correction of its moments.
WRONG_ADAM = '''def adam_step(param, grad, m, v, t, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
    """Adam without bias correction."""
    beta1, beta2 = betas
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad**2
    return param - lr * m / (np.sqrt(v) + eps), m, v'''


def solved(source: str) -> str:
    """An exercise cell as a student who found the solution would hand it in: the solution without its markers."""
    return "\n".join(line for line in source.split("\n") if BEGIN_SOLUTION not in line and END_SOLUTION not in line)


def make_submissions(root: Path) -> Path:
    """``root/submissions/<student>/<LAB>.ipynb`` for the three fixture students (see fixtures/grading/README.md)."""
    edition = root / "edition"
    student.generate(edition, [LAB[:2]])
    solution = nbformat.read(REPO_ROOT / "notebooks" / f"{LAB}.ipynb", as_version=4)
    names = dict(zip(student.exercise_names(solution), student.exercise_cells(solution)))
    assert {"MyTwoLayerNet", "my_numerical_gradient", "adam_step"} <= set(names), f"lab 02's exercises: {names}"
    answers = {solution.cells[i].id: solved(solution.cells[i].source) for i in names.values()}
    numgrad, adam = solution.cells[names["my_numerical_gradient"]].id, solution.cells[names["adam_step"]].id
    changes = {
        "all_correct": {},
        "one_wrong": {adam: WRONG_ADAM},
        "infinite_loop": {numgrad: "while True:\n    pass\n\n" + answers[numgrad]},
    }
    for name, changed in changes.items():
        nb = nbformat.read(edition / f"{LAB}.ipynb", as_version=4)
        for cell in nb.cells:
            if cell.id in answers:
                cell.source = changed.get(cell.id, answers[cell.id])
        (root / "submissions" / name).mkdir(parents=True)
        nbformat.write(nb, root / "submissions" / name / f"{LAB}.ipynb")
    return root / "submissions"


def run_grader(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    """``python -m labutils.grade ARGS`` in its own process group, killed whole after HARD_LIMIT_S."""
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "labutils.grade", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=HARD_LIMIT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"grading did not finish within {HARD_LIMIT_S} s:\n{out}\n{err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), time.monotonic() - start


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("grading")
    submissions = make_submissions(root)
    done, seconds = run_grader(
        [str(submissions), "--out", str(root / "out"), "--timeout", str(TIMEOUT_S), "--jobs", "3"], REPO_ROOT
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return root / "out", done.stdout, seconds


def test_three_fixture_submissions_give_the_expected_csv(graded):
    out, printed, seconds = graded
    with open(out / "grades.csv", newline="") as fh:
        got = list(csv.DictReader(fh))
    with open(FIXTURES / "expected_grades.csv", newline="") as fh:
        expected = list(csv.DictReader(fh))
    assert list(got[0]) == ["student", "lab", "exercise", "points", "message"]
    assert [(r["student"], r["lab"], r["exercise"], r["points"]) for r in got] == [
        (r["student"], r["lab"], r["exercise"], r["points"]) for r in expected
    ]
    for row, want in zip(got, expected):
        assert re.fullmatch(want["message"], row["message"]), f"{row['student']}, {row['exercise']}: {row['message']}"
    # Three notebooks at once: the hanging one ends at its limit, the others well before. Measured: about 35 s on
    # an idle machine; the bound leaves room for a loaded CI machine but not for a grader that waits twice.
    assert seconds < 2 * TIMEOUT_S + 60, f"grading took {seconds:.0f} s"
    assert "9 grades, 6 points in all" in printed


def test_summary_is_one_page_with_totals_and_pass_rates(graded):
    out, _, _ = graded
    text = (out / "summary.md").read_text()
    assert len(text.splitlines()) <= 60
    for line in (
        "| all_correct | 3 | 3 |",
        "| infinite_loop | 1 | 3 |",
        "| one_wrong | 2 | 3 |",
        f"| {LAB} | MyTwoLayerNet | 3/3 | 100% |",
        f"| {LAB} | my_numerical_gradient | 2/3 | 67% |",
        f"| {LAB} | adam_step | 1/3 | 33% |",
    ):
        assert line in text
    assert "- infinite_loop, 02_backprop_and_optimizers, my_numerical_gradient: timed out" in text


def test_executed_notebooks_are_kept_with_the_hidden_tests_back(graded):
    out, _, _ = graded
    nb = nbformat.read(out / "graded" / "one_wrong" / f"{LAB}.ipynb", as_version=4)
    checks = [c for c in nb.cells if student.BEGIN_HIDDEN_TESTS in c.source]
    assert len(checks) == 3
    errors = [o for c in checks for o in c.outputs if o.output_type == "error"]
    assert [e.ename for e in errors] == ["CheckFailed"]


# -- without a kernel ---------------------------------------------------------------------------------------


def tiny_lab():
    """A solution notebook with one exercise (cell "ex") and its check (cell "ex-check")."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell('import os\n\nPROFILE = os.environ.get("LABS_PROFILE", "full")', id="params"),
        nbformat.v4.new_code_cell(
            "def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION", id="ex"
        ),
        nbformat.v4.new_code_cell(
            "assert double(2) == 4\n### BEGIN HIDDEN TESTS\nassert double(-1) == -2\n### END HIDDEN TESTS",
            id="ex-check",
        ),
    ]
    nb.cells[0].metadata["tags"] = ["parameters"]
    return nb


def test_prepare_puts_back_hidden_tests_and_the_parameters_cell_by_id():
    solution = tiny_lab()
    submission = student.student_notebook(solution)
    submission.cells[0].source = 'PROFILE = "full"'  # a student's change to the parameters: undone
    submission.cells[2].source = "pass  # the visible check, deleted by hand: put back"
    nb, missing = grade.prepare(submission, solution)
    assert missing == set()
    assert nb.cells[0].source == solution.cells[0].source and nb.cells[2].source == solution.cells[2].source
    assert "raise NotImplementedError()" in nb.cells[1].source  # the student's own cell is kept
    assert grade.exercises(solution) == [Exercise("double", "ex", "ex-check")]
    del submission.cells[2]
    assert grade.prepare(submission, solution)[1] == {"ex-check"}


def error(ename: str, evalue: str):
    return nbformat.v4.new_output("error", ename=ename, evalue=evalue, traceback=[])


def score(nb, run, missing=frozenset()):
    return grade._score(nb, grade.exercises(tiny_lab()), set(missing), run)


def test_messages_for_each_way_an_exercise_can_fail():
    nb = tiny_lab()
    everything = grade._Run(ran={0, 1, 2})
    assert score(nb, everything) == [("double", 1, "passed")]
    nb.cells[2].outputs = [error("AssertionError", "")]
    assert score(nb, everything) == [("double", 0, "the check failed: AssertionError")]
    nb.cells[1].outputs = [error("SyntaxError", "invalid syntax (2135.py, line 3)\nmore")]
    assert score(nb, everything) == [
        ("double", 0, "your exercise cell raised SyntaxError: invalid syntax (2135.py, line 3)")
    ]
    stopped = grade._Run(ran={0}, stopped_at=1, reason="timed out at the 5 s limit")
    assert score(nb, stopped) == [
        ("double", 0, "timed out at the 5 s limit in cell 2 (id ex), this exercise's cell; the kernel was stopped")
    ]
    earlier = grade._Run(
        ran=set(), stopped_at=0, reason="the kernel died (out of memory, or the code ended the process)"
    )
    assert score(nb, earlier) == [
        (
            "double",
            0,
            "not run: the notebook stopped earlier, the kernel died (out of memory, or the code ended the process) "
            "in cell 1 (id params)",
        )
    ]
    [(name, points, message)] = score(nb, everything, missing={"ex-check"})
    assert points == 0 and message.startswith("check cell missing: the submission has no cell with id 'ex-check'")


def test_an_unreadable_file_scores_zero_without_running_anything(tmp_path):
    solution = REPO_ROOT / "notebooks" / f"{LAB}.ipynb"
    broken = tmp_path / f"{LAB}.ipynb"
    broken.write_text("{ this is not json")
    rows = grade.grade_notebook(broken, solution)
    names = student.exercise_names(nbformat.read(solution, as_version=4))
    assert [(name, points) for name, points, _ in rows] == [(name, 0) for name in names]
    assert all(message.startswith("not a readable notebook (") for _, _, message in rows)


def test_missing_labs_and_stray_files_get_rows_and_bad_input_one_sentence(tmp_path, capsys):
    assert grade.main([str(tmp_path / "nowhere")]) == 2
    assert "error: Submissions folder" in capsys.readouterr().err
    (tmp_path / "subs" / "ada").mkdir(parents=True)
    (tmp_path / "subs" / "ada" / "notes.ipynb").write_text("{}")
    assert grade.main([str(tmp_path / "subs")]) == 2
    assert "is a lab with exercises" in capsys.readouterr().err
    (tmp_path / "subs" / "alan").mkdir()
    (tmp_path / "subs" / "alan" / f"{LAB}.ipynb").write_text("not json")  # graded (to zero) without a kernel
    rows = grade.grade_all(tmp_path / "subs", tmp_path / "out", progress=lambda line: None, jobs=1)
    by_student = {}
    for row in rows:
        by_student.setdefault(row.student, []).append(row)
    exercises = student.exercise_names(nbformat.read(REPO_ROOT / "notebooks" / f"{LAB}.ipynb", as_version=4))
    ada = by_student["ada"]  # in lab order: lab 02 (not submitted), then the stray file
    assert [(r.exercise, r.points, r.message) for r in ada[:-1]] == [(name, 0, "no submission") for name in exercises]
    assert ada[-1].lab == "notes" and ada[-1].message.startswith("not a lab with exercises: name the file like the lab")
    assert all(r.points == 0 and r.message.startswith("not a readable notebook") for r in by_student["alan"])
    assert grade.read_csv(tmp_path / "out" / "grades.csv") == rows
