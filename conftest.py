"""Shared test set-up for tests/ and the nbval run over notebooks/: offline tracking, a private runs/ folder,
and notebooks executed once.

Every test session writes lab outputs into a temporary ``LABS_RUNS`` (never the user's ``runs/``)
and runs wandb offline into a temporary ``WANDB_DIR``. These are set before any kernel starts, so
nbval's kernels inherit them too.

``notebook_metrics(stem)`` executes ``notebooks/<stem>.ipynb`` with papermill in the quick profile
and returns its parsed metrics.json. Each notebook runs at most once per test session, also under
pytest-xdist: the first worker to ask runs it under a file lock, the others read its result.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent
NOTEBOOKS = REPO / "notebooks"


def session_root() -> Path:
    """One temporary folder shared by the controller and every xdist worker of this session."""
    root = os.environ.get("LABS_TEST_ROOT")
    if not root:
        root = tempfile.mkdtemp(prefix="labs-tests-")
        os.environ["LABS_TEST_ROOT"] = root  # inherited by xdist workers started after this
    return Path(root)


def pytest_configure(config):
    root = session_root()
    os.environ.setdefault("LABS_PROFILE", "quick")
    # nbval's kernels write here; papermill runs (execute_notebook) use root/"runs". Kept apart because a
    # lab that finds finished checkpoints in its runs folder loads them instead of training again.
    os.environ["LABS_RUNS"] = str(root / "nbval-runs")
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ["WANDB_DIR"] = str(root / "wandb")
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("MPLBACKEND", "Agg")
    # nbval reads a cell's kernel messages only after the cell has finished, and the channel holds about a
    # thousand (beyond that they are dropped, the cell's end too): bars redrawn at most every two seconds keep
    # even a long cell's widget updates far below that.
    os.environ.setdefault("TQDM_MININTERVAL", "2")
    # Many kernels and workers share two cores: one thread each avoids oversubscription.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")


def pytest_collection_modifyitems(config, items):
    """Mark nbval's notebook cells, so ``-m "not notebooks"`` gives the fast unit tests alone.

    Under pytest-xdist, ``--dist loadfile`` keeps every cell of a notebook on one worker, in order:
    they share one kernel.
    """
    for item in items:
        if Path(str(item.fspath)).suffix == ".ipynb":
            item.add_marker(pytest.mark.notebooks)


class _Bars:
    """tqdm.auto.tqdm replaced by a text bar drawn nowhere that keeps a list of the bars made (``made``),
    whether each was shown (made enabled: ``bar.shown``) and its restarts (``bar.resets``: ``(description, total)``)."""

    def __init__(self, monkeypatch):
        import tqdm.auto

        self.made = made = []

        class Bar(tqdm.std.tqdm):
            def __init__(self, *args, **kw):
                super().__init__(*args, file=io.StringIO(), **kw)
                made.append(self)
                self.shown, self.resets = not self.disable, []

            def reset(self, total=None):
                self.resets.append((self.desc, total))
                super().reset(total)

        monkeypatch.setattr(tqdm.auto, "tqdm", Bar)


@pytest.fixture
def tqdm_bars(monkeypatch) -> _Bars:
    """Every progress bar made during the test (see ``_Bars``)."""
    return _Bars(monkeypatch)


def notebook_paths() -> list[Path]:
    """Every lab notebook, in teaching order."""
    return sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def execute_notebook(stem: str, parameters: dict | None = None, runs: Path | None = None) -> Path:
    """Run one notebook with papermill (quick profile) into the session's runs folder (or ``runs``); return the
    executed notebook's path."""
    import papermill as pm

    from labutils.nbtools import papermill_engine

    source = NOTEBOOKS / f"{stem}.ipynb"
    if not source.exists():
        raise FileNotFoundError(f"No notebook {source}")
    out_dir = Path(runs or session_root() / "runs") / stem
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / f"{stem}.executed.ipynb"
    saved = os.environ.get("LABS_RUNS")
    os.environ["LABS_RUNS"] = str(out_dir.parent)  # the kernel inherits it, whatever a test changed
    try:
        pm.execute_notebook(
            str(source),
            str(output),
            parameters={"PROFILE": "quick", **(parameters or {})},
            cwd=str(NOTEBOOKS),
            kernel_name="python3",
            engine_name=papermill_engine(),
            progress_bar=False,
            log_output=False,
        )
    finally:
        os.environ["LABS_RUNS"] = saved if saved is not None else str(out_dir.parent)
    return output


@pytest.fixture(scope="session")
def notebook_metrics():
    """``notebook_metrics(stem)`` → the metrics.json of that notebook, executed once per session."""
    from filelock import FileLock

    root = session_root()
    cache: dict[str, dict] = {}

    def get(stem: str) -> dict:
        if stem in cache:
            return cache[stem]
        done = root / "executed" / f"{stem}.json"
        done.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(done) + ".lock"):
            if not done.exists():
                try:
                    execute_notebook(stem)
                    status = {"ok": True}
                except Exception as exc:  # remembered, so other tests of this notebook fail fast and alike
                    status = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:4000]}
                done.write_text(json.dumps(status))
        status = json.loads(done.read_text())
        if not status["ok"]:
            pytest.fail(f"notebook {stem} failed to execute: {status['error']}")
        metrics_path = root / "runs" / stem / "metrics.json"
        cache[stem] = json.loads(metrics_path.read_text())
        return cache[stem]

    return get
