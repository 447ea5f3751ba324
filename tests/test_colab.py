"""labutils.colab: the Open-in-Colab badge and the install cell, tried on copies of the real notebooks.

The delivery cells must leave a lab as it was for everything else: papermill still injects parameters after the
``parameters`` cell, the notebook is stored without outputs, ruff finds nothing new, and applying them twice is
applying them once. The install cell itself runs in a fresh virtual environment with a stand-in ``google.colab``
module and a local git repository: it installs labutils once, prints one line, and a second run installs nothing.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import venv
from contextlib import redirect_stdout
from pathlib import Path

import nbformat
import pytest

from labutils import colab, student
from labutils.nbtools import stored_output_problems
from labutils.util import REPO_ROOT

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
RUFF = Path(sys.executable).with_name("ruff")


def undelivered(path: Path):
    """The notebook at ``path`` without its delivery cells: the lab as its author wrote it."""
    nb = nbformat.read(path, as_version=4)
    nb.cells = [c for c in nb.cells if c.get("id") not in (colab.BADGE_CELL_ID, colab.INSTALL_CELL_ID)]
    return nb


def plain_copies(folder: Path) -> list[Path]:
    """Copies of the real notebooks without their delivery cells, in ``folder``."""
    folder.mkdir()
    for path in NOTEBOOKS:
        nbformat.write(undelivered(path), folder / path.name)
    return [folder / path.name for path in NOTEBOOKS]


def delivered_copies(tmp_path: Path) -> list[Path]:
    """Copies of the real notebooks, their delivery cells removed and then written again by the command line."""
    copies = plain_copies(tmp_path / "notebooks")
    assert colab.main([str(p) for p in copies]) == 0
    return copies


def test_badge_links_to_the_notebook_on_the_default_branch():
    owner_repo = colab.REPO_URL.removeprefix("https://github.com/")
    expected = (
        f"https://colab.research.google.com/github/{owner_repo}/blob/{colab.BRANCH}/notebooks/04_residual_mlp.ipynb"
    )
    assert colab.badge_markdown("notebooks/04_residual_mlp.ipynb") == (
        f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({expected})"
    )
    assert colab.badge_markdown("04_residual_mlp.ipynb", student=True).endswith("/student/04_residual_mlp.ipynb)")
    with pytest.raises(ValueError, match="Colab opens notebooks from GitHub only: 'file:///srv/labs'"):
        colab.colab_url("notebooks/x.ipynb", repo_url="file:///srv/labs")
    with pytest.raises(ValueError, match="Not a notebook file name: 'README.md'"):
        colab.repository_path("README.md")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_badges_resolve_to_files_of_the_repository(path, tmp_path):
    target = colab.repository_path(path)
    assert (REPO_ROOT / target).is_file()
    tracked = subprocess.run(["git", "ls-files", "--", target], cwd=REPO_ROOT, capture_output=True, text=True)
    assert tracked.stdout.strip() == target, f"{target} is not tracked by git: the badge would lead nowhere"
    # The student edition's badge names the file labutils.student writes for this lab.
    written = student.generate(tmp_path, [path.stem[:2]])
    assert colab.repository_path(next(iter(written)), student=True) == f"{colab.STUDENT_DIR}/{path.name}"


def test_install_cell_does_nothing_off_colab(monkeypatch):
    source = colab.install_cell_source()

    def no_subprocess(*args, **kwargs):
        raise AssertionError(f"the install cell ran {args} off Colab")

    monkeypatch.setattr(subprocess, "run", no_subprocess)
    monkeypatch.setitem(sys.modules, "google.colab", None)  # importing it raises ImportError, as off Colab
    namespace: dict = {}
    printed = io.StringIO()
    with redirect_stdout(printed):
        exec(compile(source, "install-cell", "exec"), namespace)
    assert printed.getvalue() == ""
    assigned = {name for name in namespace if not name.startswith("__")}
    # a lab's knobs() takes every UPPER_CASE global for a parameter: the cell must leave none behind
    assert assigned == {"importlib", "subprocess", "sys", "Path", "repo_url", "branch", "on_colab"}
    with pytest.raises(ValueError, match="must be non-empty, without quotes"):
        colab.install_cell_source(repo_url='https://x"; import os')


def test_delivery_cells_on_copies_of_every_lab(tmp_path):
    for path in delivered_copies(tmp_path):
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert nb.cells[0].id == colab.BADGE_CELL_ID and nb.cells[0].cell_type == "markdown"
        assert nb.cells[0].source == colab.badge_markdown(path.name)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code[0].id == colab.INSTALL_CELL_ID and code[0].source == colab.install_cell_source()
        assert "parameters" in code[1].metadata.get("tags", []), f"{path.name}: the parameters cell must follow"
        assert len({c.id for c in nb.cells}) == len(nb.cells)
        assert stored_output_problems(json.loads(path.read_text())) == []
        original = undelivered(REPO_ROOT / "notebooks" / path.name)
        assert [c.id for c in nb.cells[1:] if c.id != colab.INSTALL_CELL_ID] == [c.id for c in original.cells]


def test_applying_twice_is_applying_once_and_check_says_so(tmp_path, capsys):
    copies = delivered_copies(tmp_path)
    before = {p: p.read_bytes() for p in copies}
    assert colab.main(["--check", *map(str, copies)]) == 0
    assert colab.main([str(p) for p in copies]) == 0
    assert {p: p.read_bytes() for p in copies} == before
    assert f"All {len(copies)} notebooks have the Colab badge and install cell" in capsys.readouterr().out
    [fresh] = [p for p in plain_copies(tmp_path / "fresh") if p.name == NOTEBOOKS[0].name]
    plain = fresh.read_bytes()
    assert colab.main(["--check", str(fresh)]) == 1
    assert fresh.read_bytes() == plain  # --check changes nothing
    assert "needs the Colab badge and install cell" in capsys.readouterr().out


def test_a_new_repository_address_updates_the_cells_in_place():
    nb = undelivered(NOTEBOOKS[1])
    once = colab.add_delivery_cells(nb, NOTEBOOKS[1].name)
    moved = colab.add_delivery_cells(once, NOTEBOOKS[1].name, repo_url="https://github.com/other/labs", branch="fall")
    assert len(moved.cells) == len(once.cells) == len(nb.cells) + 2
    assert "github/other/labs/blob/fall/notebooks/" in moved.cells[0].source
    assert 'repo_url, branch = "https://github.com/other/labs", "fall"' in moved.cells[2].source
    assert colab.add_delivery_cells(moved, NOTEBOOKS[1].name) == once
    # the student edition follows its solution: badge retargeted, nothing added where there was nothing
    assert colab.add_delivery_cells(nb, NOTEBOOKS[1].name, student=True, only_update=True) == nb
    retargeted = colab.add_delivery_cells(once, NOTEBOOKS[1].name, student=True, only_update=True)
    assert retargeted.cells[0].source.endswith(f"/student/{NOTEBOOKS[1].name})")


def test_the_student_edition_of_a_delivered_lab_opens_the_student_copy(tmp_path):
    copies = delivered_copies(tmp_path)
    written = student.generate(tmp_path / "student", notebooks_dir=copies[0].parent)
    assert list(written) == [p.name for p in copies]
    for name in written:
        nb = nbformat.read(tmp_path / "student" / name, as_version=4)
        assert nb.cells[0].source == colab.badge_markdown(name, student=True)
        assert [c for c in nb.cells if c.cell_type == "code"][0].source == colab.install_cell_source()


def ruff_problems(paths: list[Path]) -> tuple[int, int]:
    """(ruff check diagnostics, files ruff format would change), with the repository's settings."""
    config = ["--config", str(REPO_ROOT / "pyproject.toml")]
    check = subprocess.run(
        [str(RUFF), "check", *config, "--output-format", "json", *map(str, paths)], capture_output=True, text=True
    )
    fmt = subprocess.run([str(RUFF), "format", *config, "--check", *map(str, paths)], capture_output=True, text=True)
    return len(json.loads(check.stdout or "[]")), fmt.stdout.count("Would reformat")


@pytest.mark.skipif(not RUFF.exists(), reason="ruff is not installed beside this Python")
def test_the_cells_add_nothing_for_ruff(tmp_path):
    plain = plain_copies(tmp_path / "originals")
    assert ruff_problems(delivered_copies(tmp_path)) == ruff_problems(plain)
    one = tmp_path / "cell.py"
    one.write_text(colab.install_cell_source() + "\n")
    assert ruff_problems([one]) == (0, 0)


@pytest.mark.notebooks
def test_a_delivered_lab_runs_under_papermill_with_injected_parameters(tmp_path):
    import papermill as pm

    from labutils.nbtools import papermill_engine

    [copy] = [p for p in delivered_copies(tmp_path) if p.stem == "01_numpy_mlp"]
    runs = tmp_path / "runs"
    env = {"LABS_RUNS": str(runs), "LABS_PROFILE": "quick"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        pm.execute_notebook(
            str(copy),
            str(tmp_path / "executed.ipynb"),
            parameters={"PROFILE": "quick", "SEED": 3},
            cwd=str(REPO_ROOT / "notebooks"),
            kernel_name="python3",
            engine_name=papermill_engine(),
            progress_bar=False,
        )
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    executed = nbformat.read(tmp_path / "executed.ipynb", as_version=4)
    code = [c for c in executed.cells if c.cell_type == "code"]
    assert code[0].id == colab.INSTALL_CELL_ID and code[0].outputs == []  # off Colab: silent
    assert "parameters" in code[1].metadata.tags and "injected-parameters" in code[2].metadata.tags
    metrics = json.loads((runs / "01_numpy_mlp" / "metrics.json").read_text())
    assert metrics["seed"] == 3 and metrics["profile"] == "quick"
    assert "REPO_URL" not in metrics.get("params", {}) and "repo_url" not in metrics.get("params", {})


# -- the install cell on a fresh machine ------------------------------------------------------------------


def local_repository(root: Path) -> Path:
    """A git repository holding the package (pyproject.toml, README.md, labutils/) on branch ``main``."""
    repo = root / "deep-learning-labs"
    repo.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, repo)
    shutil.copytree(REPO_ROOT / "labutils", repo / "labutils", ignore=shutil.ignore_patterns("__pycache__"))
    git = ["git", "-c", "user.name=Course", "-c", "user.email=course@example.org", "-c", "init.defaultBranch=main"]
    for args in (["init", "--quiet"], ["add", "."], ["commit", "--quiet", "-m", "labutils"]):
        subprocess.run([*git, *args], cwd=repo, check=True)
    return repo


@pytest.mark.skipif(shutil.which("git") is None, reason="the install cell clones with git")
def test_install_cell_installs_labutils_once_in_a_fresh_venv_on_simulated_colab(tmp_path):
    repo = local_repository(tmp_path / "origin")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)  # plain: nothing from this environment
    python = env_dir / "bin" / "python"
    fake = tmp_path / "fake-colab" / "google" / "colab"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('"""Stands in for Colab\'s module: its presence is what the cell detects."""\n')
    cell = tmp_path / "cell.py"
    cell.write_text(colab.install_cell_source(repo_url=f"file://{repo}", branch="main"))
    content = tmp_path / "content"  # Colab's working folder
    content.mkdir()
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}

    def run(*args, colab_module: bool = True):
        env = {**base, "PYTHONPATH": str(tmp_path / "fake-colab")} if colab_module else base
        return subprocess.run([str(python), *args], cwd=content, env=env, capture_output=True, text=True, timeout=600)

    elsewhere = run(str(cell), colab_module=False)
    assert elsewhere.returncode == 0 and elsewhere.stdout == "", elsewhere.stderr
    assert run("-c", "import labutils").returncode != 0  # nothing was installed

    first = run(str(cell))
    assert first.returncode == 0 and first.stderr == "", first.stderr  # git and pip say nothing unless they fail
    checkout = content / "deep-learning-labs"
    assert first.stdout.splitlines() == [f"Installed labutils from file://{repo} (main) into {checkout}"]
    where = run("-c", "import labutils, numpy; print(labutils.__file__)")
    assert where.returncode == 0 and where.stdout.strip() == str(checkout / "labutils" / "__init__.py")

    second = run(str(cell))
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines() == [f"labutils is already installed: {checkout / 'labutils'}"]

    check = run("-m", "pip", "check")
    assert check.returncode == 0 and "No broken requirements found" in check.stdout, check.stdout + check.stderr
    requires = run("-c", "from importlib.metadata import requires; print(requires('labutils'))")
    assert "numpy" in requires.stdout and "==" not in requires.stdout, requires.stdout  # ranges, never pins


def test_readme_has_every_labs_current_badge():
    readme = (REPO_ROOT / "README.md").read_text()
    for path in NOTEBOOKS:
        assert colab.badge_markdown(path.name) in readme, f"README.md lacks the current Colab badge of {path.name}"
    assert readme.count("colab-badge.svg") == len(NOTEBOOKS)  # no stale badge left beside the current ones
