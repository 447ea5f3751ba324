"""Running the labs on Google Colab: the "Open in Colab" badge and the cell that installs ``labutils`` there.

Colab opens a notebook straight from the course repository on GitHub, but a fresh Colab runtime has no
``labutils``. Every lab therefore starts with two delivery cells, written here and nowhere else:

1. a markdown cell with the badge, linking to this notebook on the repository's default branch
   (``notebooks/NN_name.ipynb``; the student edition's copy links to ``student/NN_name.ipynb``);
2. a code cell, the first code cell of the notebook (the ``parameters`` cell comes right after it, so papermill
   still injects its parameters there), that on Colab only, and only while ``labutils`` cannot be imported,
   clones the repository and installs it with ``pip install -e``, then prints one line. Anywhere else (a laptop,
   CI, nbval, a JupyterHub with the course installed) it does nothing and prints nothing.

The repository's address is :data:`REPO_URL` and :data:`BRANCH` below: a course that forks the repository
changes these two lines and runs ``python -m labutils.colab`` to rewrite the cells of every notebook::

    python -m labutils.colab            # add or update the delivery cells of notebooks/NN_*.ipynb
    python -m labutils.colab --check    # change nothing; exit 1 if a notebook lacks them or they are stale

The install cell cannot import ``labutils`` (that is what it installs), so it is plain Python with the address
written into it. Its variables are lower case: a lab's ``knobs`` call collects every UPPER_CASE global as a
parameter.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import nbformat

from .util import REPO_ROOT, atomic_write_text

__all__ = [
    "REPO_URL",
    "BRANCH",
    "STUDENT_DIR",
    "BADGE_CELL_ID",
    "INSTALL_CELL_ID",
    "colab_url",
    "badge_markdown",
    "install_cell_source",
    "add_delivery_cells",
    "has_delivery_cells",
    "repository_path",
    "apply",
]

# The course repository and its default branch: the one place to change for a fork.
REPO_URL = "https://github.com/your-course/deep-learning-labs"
BRANCH = "main"

NOTEBOOK_DIR = "notebooks"  # where the solution notebooks live in the repository
STUDENT_DIR = "student"  # where the student edition lives when published (labutils.student writes it)
BADGE_CELL_ID = "colab-badge"
INSTALL_CELL_ID = "colab-install"
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"

INSTALL_CELL = """# On Google Colab, install the course's code (labutils) from its repository, once per runtime.
# Anywhere else (your laptop, JupyterLab, CI) this cell does nothing.
import importlib.util
import subprocess
import sys
from pathlib import Path

repo_url, branch = "{repo_url}", "{branch}"
try:
    import google.colab  # noqa: F401 -- only Colab has this module

    on_colab = True
except ImportError:
    on_colab = False
if on_colab and importlib.util.find_spec("labutils") is None:
    checkout = Path.cwd() / repo_url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
    if not checkout.exists():
        git_clone = ["git", "clone", "--quiet", "--depth", "1", "--branch", branch, repo_url, str(checkout)]
        subprocess.run(git_clone, check=True)
    pip_install = [sys.executable, "-m", "pip", "install", "-qq", "--disable-pip-version-check", "-e", str(checkout)]
    subprocess.run(pip_install, check=True)
    # The editable install takes effect when Python next starts; this running kernel needs the path now.
    sys.path.insert(0, str(checkout))
    importlib.invalidate_caches()
    print(f"Installed labutils from {{repo_url}} ({{branch}}) into {{checkout}}")
elif on_colab:
    print(f"labutils is already installed: {{Path(importlib.util.find_spec('labutils').origin).parent}}")"""


def repository_path(notebook, student: bool = False) -> str:
    """The notebook's path inside the repository: ``notebooks/NN_name.ipynb`` or ``student/NN_name.ipynb``.

    notebook: a path or file name whose last part is the notebook's file name (``04_residual_mlp.ipynb``).
    """
    name = Path(notebook).name
    if not name.endswith(".ipynb"):
        raise ValueError(f"Not a notebook file name: {str(notebook)!r} (expected a name ending in .ipynb).")
    return f"{STUDENT_DIR if student else NOTEBOOK_DIR}/{name}"


def colab_url(path: str, repo_url: str = REPO_URL, branch: str = BRANCH) -> str:
    """Colab's address for ``path`` (inside the repository) on ``branch`` of the GitHub repository ``repo_url``."""
    prefix = "https://github.com/"
    if not repo_url.startswith(prefix):
        raise ValueError(f"Colab opens notebooks from GitHub only: {repo_url!r} does not start with {prefix!r}.")
    owner_repo = repo_url.removeprefix(prefix).rstrip("/").removesuffix(".git")
    return f"https://colab.research.google.com/github/{owner_repo}/blob/{branch}/{path}"


def badge_markdown(notebook, student: bool = False, repo_url: str = REPO_URL, branch: str = BRANCH) -> str:
    """The "Open in Colab" badge (markdown) for a lab notebook; ``student`` links to the student edition's copy."""
    url = colab_url(repository_path(notebook, student), repo_url, branch)
    return f"[![Open In Colab]({BADGE_IMAGE})]({url})"


def install_cell_source(repo_url: str = REPO_URL, branch: str = BRANCH) -> str:
    """The source of the install cell (see the module docstring) for the repository ``repo_url`` at ``branch``."""
    for name, value in (("repo_url", repo_url), ("branch", branch)):
        if not value or any(c in value for c in '"\\\n '):
            raise ValueError(f"{name} {value!r} must be non-empty, without quotes, backslashes or spaces.")
    return INSTALL_CELL.format(repo_url=repo_url, branch=branch)


def _find(nb, cell_id: str) -> int | None:
    return next((i for i, cell in enumerate(nb.cells) if cell.get("id") == cell_id), None)


def add_delivery_cells(
    nb, notebook, student: bool = False, repo_url: str = REPO_URL, branch: str = BRANCH, only_update: bool = False
):
    """A copy of ``nb`` (an ``nbformat`` notebook, not modified) with the badge cell first and the install cell as
    its first code cell; cells already there (found by id) are updated in place, so applying twice is applying once.

    notebook: the notebook's file name or path (names the badge's target). ``only_update`` changes the cells only
    where they already exist (the student edition follows its solution notebook, adding nothing). The install
    cell goes right before the first code cell (the ``parameters`` cell): papermill injects parameters after the
    tagged cell wherever it is. Both cells are stored without outputs.
    """
    nb = copy.deepcopy(nb)
    badge, install = _find(nb, BADGE_CELL_ID), _find(nb, INSTALL_CELL_ID)
    if only_update and badge is None and install is None:
        return nb
    if badge is not None:
        nb.cells.pop(badge)
    if install is not None:
        nb.cells.pop(install - (badge is not None and badge < install))
    badge_cell = nbformat.v4.new_markdown_cell(badge_markdown(notebook, student, repo_url, branch), id=BADGE_CELL_ID)
    install_cell = nbformat.v4.new_code_cell(install_cell_source(repo_url, branch), id=INSTALL_CELL_ID)
    first_code = next((i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"), len(nb.cells))
    nb.cells.insert(first_code, install_cell)
    nb.cells.insert(0, badge_cell)
    return nb


def has_delivery_cells(nb, notebook, student: bool = False) -> bool:
    """Whether ``nb`` already holds the current badge and install cells, where :func:`add_delivery_cells` puts them."""
    return nb == add_delivery_cells(nb, notebook, student)


def apply(paths: list[Path], check: bool = False) -> list[Path]:
    """Add or update the delivery cells of the notebooks ``paths``; return those that changed (or, with ``check``,
    would change). A notebook already up to date is not rewritten."""
    changed = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        if has_delivery_cells(nb, path):
            continue
        changed.append(path)
        if not check:
            atomic_write_text(path, nbformat.writes(add_delivery_cells(nb, path)) + "\n")
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m labutils.colab",
        description=f"Add the Open-in-Colab badge and the install cell to the labs (repository {REPO_URL}, {BRANCH}).",
    )
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebook files (default: notebooks/NN_*.ipynb)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a notebook needs the cells")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted((REPO_ROOT / NOTEBOOK_DIR).glob("[0-9][0-9]_*.ipynb"))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        print(f"error: no such notebook: {', '.join(missing)}.", file=sys.stderr)
        return 2
    changed = apply(paths, check=args.check)
    for path in changed:
        print(f"{'needs' if args.check else 'updated'} the Colab badge and install cell: {path}")
    if not changed:
        print(f"All {len(paths)} notebooks have the Colab badge and install cell for {REPO_URL} ({BRANCH}).")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    raise SystemExit(main())
