"""Notebook housekeeping: executing labs with papermill, and storing them clean.

``run_notebooks`` is what ``make labs`` and ``python -m labutils run`` call; ``strip_notebook`` is
what ``make strip`` calls. Stored notebooks carry no outputs except in cells marked
``# NBVAL_CHECK_OUTPUT`` (deterministic regression checks that nbval compares).
"""

from __future__ import annotations

import ast
import contextlib
import html
import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labutils.util import REPO_ROOT

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


def _literal(node: ast.AST | None) -> tuple[bool, Any]:
    """(True, value) if ``node`` is a Python literal (``dict(A=1)`` included), else (False, None)."""
    if node is None:
        return False, None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        items = [(kw.arg, _literal(kw.value)) for kw in node.keywords]
        if all(name and ok for name, (ok, _) in items):
            return True, {name: value for name, (_, value) in items}
        return False, None
    try:
        return True, ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError):
        return False, None


def _call_name(node: ast.AST) -> str:
    func = node.func if isinstance(node, ast.Call) else None
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def _profile_defaults(tree: ast.Module, names: set[str]) -> dict[str, list[Any]]:
    """``{NAME: [quick, full]}`` from a ``labutils.knobs(PROFILE, globals(), quick=..., full=...)`` call, and
    from ``NAME = ... labutils.pick(PROFILE, quick=..., full=...)`` lines (the older way), where literal."""
    found: dict[str, list[Any]] = {}
    for node in ast.walk(tree):
        if _call_name(node) == "knobs":
            tables = {kw.arg: _literal(kw.value) for kw in node.keywords if kw.arg in ("quick", "full")}
            quick, full = tables.get("quick", (False, None)), tables.get("full", (False, None))
            if quick[0] and full[0] and isinstance(quick[1], dict) and isinstance(full[1], dict):
                for name in quick[1].keys() & full[1].keys():
                    found[name] = [quick[1][name], full[1][name]]
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name not in names or name in found:
                continue
            for call in ast.walk(node.value):
                values = {kw.arg: _literal(kw.value) for kw in getattr(call, "keywords", [])}
                if _call_name(call) == "pick" and all(values.get(k, (False,))[0] for k in ("quick", "full")):
                    found[name] = [values["quick"][1], values["full"][1]]
    return found


@dataclass
class NotebookParameters:
    """What a notebook's ``parameters`` cell accepts: each name with the defaults its value must fit.

    ``defaults[name]`` is the cell's literal value, or the profile defaults ``[quick, full]`` of a knob that
    is ``None`` in the cell; an empty list (a default that is not a literal, or ``None`` without profile
    defaults) accepts any value. ``none_ok`` holds the names whose cell default is ``None`` (None = the
    profile's default).
    """

    stem: str
    defaults: dict[str, list[Any]]
    none_ok: set[str]


def notebook_parameters(path: Path) -> NotebookParameters:
    """Read (never run) a notebook's ``parameters`` cell and its ``knobs``/``pick`` profile defaults."""
    nb = json.loads(Path(path).read_text())
    code = [c for c in nb.get("cells", []) if c.get("cell_type") == "code"]
    tagged = [i for i, c in enumerate(code) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not tagged:
        return NotebookParameters(path.stem, {}, set())

    def parse(cell: dict) -> ast.Module:
        try:
            return ast.parse(_text(cell))
        except SyntaxError:  # IPython magics and the like: nothing to read in this cell
            return ast.Module(body=[], type_ignores=[])

    cell_defaults: dict[str, tuple[bool, Any]] = {}
    for node in parse(code[tagged[0]]).body:
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        for target in targets:
            if isinstance(target, ast.Name):
                cell_defaults[target.id] = _literal(node.value)
    rest = ast.Module(body=[n for c in code[tagged[0] + 1 :] for n in parse(c).body], type_ignores=[])
    profiled = _profile_defaults(rest, set(cell_defaults))
    defaults, none_ok = {}, set()
    for name, (is_literal, value) in cell_defaults.items():
        if is_literal and value is None:
            none_ok.add(name)
            defaults[name] = profiled.get(name, [])
        else:
            defaults[name] = [value] if is_literal else []
    return NotebookParameters(path.stem, defaults, none_ok)


def check_parameters(paths: list[Path], parameters: dict[str, Any] | None) -> dict[Path, dict[str, Any]]:
    """Check ``-p NAME VALUE`` overrides against the notebooks' parameters cells before anything runs.

    Returns, per notebook, the overrides it takes (a name only some of the chosen notebooks have goes to
    those). Raises one ValueError for ``PROFILE`` (chosen with ``--profile``), for a name no chosen notebook
    takes (listing the accepted names and the closest one), and for a value whose type does not fit the
    defaults (``labutils.params.check_value``).
    """
    import difflib

    from labutils.params import check_value

    parameters = dict(parameters or {})
    if "PROFILE" in parameters:
        raise ValueError(f"Choose the profile with --profile quick|full, not -p PROFILE {parameters['PROFILE']!r}.")
    accepted = {path: notebook_parameters(path) for path in paths}
    chosen: dict[Path, dict[str, Any]] = {path: {} for path in paths}
    for name, value in parameters.items():
        takers = [path for path, nbp in accepted.items() if name in nbp.defaults]
        if not takers:
            known = list(dict.fromkeys(n for nbp in accepted.values() for n in nbp.defaults if n != "PROFILE"))
            where = paths[0].stem if len(paths) == 1 else f"any of the {len(paths)} notebooks"
            close = difflib.get_close_matches(name.upper(), known, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            takes = f"the parameters are {', '.join(known)}" if known else "it has no cell tagged 'parameters'"
            raise ValueError(f"Unknown parameter {name}={value!r} for {where}{hint}: {takes}.")
        for path in takers:
            nbp = accepted[path]
            if not (value is None and name in nbp.none_ok):
                try:
                    check_value(name, value, nbp.defaults[name])
                except ValueError as exc:
                    raise ValueError(str(exc).rstrip(".") + f" ({nbp.stem}).") from None
            chosen[path][name] = value
    return chosen


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


class NotebookInterrupted(Exception):
    """Ctrl-C (or SIGINT) while a notebook ran; the message names the notebook and cell. The experiment cache
    keeps every finished run, and an interrupted one resumes from its last epoch when the notebook runs again."""


def describe_failure(exc: BaseException) -> str:
    """'cell 7: ValueError: ...' from a papermill execution error; the bare message otherwise."""
    cell = getattr(exc, "exec_count", None) or getattr(exc, "cell_index", None)
    ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
    if ename:
        where = f"cell {cell}" if cell is not None else "a cell"
        return f"{where}: {ename}: {evalue}"
    return f"{type(exc).__name__}: {exc}"


class NotebookProgress:
    """Where a running notebook is: its code cell, and the tqdm bars that cell shows, read from kernel messages.

    tqdm bars reach us two ways: as text on stderr (``epochs:  25%|██▌  | 3/12 [...]``, with ``\\r`` between
    updates), or, in a kernel with ipywidgets (the labs), as widget messages: an HBox of an HTML label
    (``epochs: 25%``), a progress bar and an HTML count (``3/12 [...]``). Both become ``(label, n, total)``.
    ``describe()`` gives ``"cell 7 of 31, depth sweep 1/4, epochs 3/12"``.
    """

    _BAR = re.compile(r"^\s*(?:(?P<label>.*?):\s*)?\d+%\|.*?\|\s*(?P<n>\d+)/(?P<total>\d+)(?:\s|\[|$)")

    def __init__(self, stem: str, on_change: Callable[[NotebookProgress], None] | None = None):
        self.stem = stem
        self.cell = 0  # 1-based position of the running code cell; 0 before the first
        self.cells = 0  # code cells, the injected parameters cell included
        self.bars: dict[str, tuple[str, int, int]] = {}  # bar id -> (label, n, total), outermost first
        self._on_change = on_change
        self._models: dict[str, str] = {}  # widget comm id -> model name
        self._texts: dict[str, str] = {}  # HTML widget comm id -> its text
        self._boxes: dict[str, tuple[str, str, str]] = {}  # tqdm HBox id -> (label id, bar id, count id)

    def describe(self) -> str:
        where = [f"cell {self.cell} of {self.cells}"] if self.cells else []
        return ", ".join(where + [f"{label} {n}/{total}" for label, n, total in self.bars.values()])

    def cell_started(self, cell: dict, cell_index: int, cells: list) -> None:
        code = [i for i, c in enumerate(cells) if c.get("cell_type") == "code"]
        self.cells = len(code)
        self.cell = code.index(cell_index) + 1 if cell_index in code else self.cell
        self.bars.clear()
        self._changed()

    def message(self, msg: dict) -> None:
        """Read one iopub message of the running cell."""
        kind, content = msg.get("msg_type", ""), msg.get("content", {})
        if kind == "stream" and content.get("name") == "stderr":
            for line in re.split(r"[\r\n]", content.get("text", "")):
                self._show("text:" + line.split(":", 1)[0], line)
        elif kind in ("comm_open", "comm_msg"):
            self._widget(content.get("comm_id", ""), content.get("data", {}).get("state", {}))
        elif kind == "comm_close" and self.bars.pop(content.get("comm_id", ""), None):
            self._changed()

    def _widget(self, comm_id: str, state: dict) -> None:
        if "_model_name" in state:
            self._models[comm_id] = state["_model_name"]
        if isinstance(state.get("value"), str):
            self._texts[comm_id] = html.unescape(state["value"]).replace("\u2007", " ").replace("\u2002", " ")
        children = [c.removeprefix("IPY_MODEL_") for c in state.get("children", [])]
        if len(children) == 3 and self._models.get(children[1], "").endswith("ProgressModel"):
            self._boxes[comm_id] = tuple(children)
        if state.get("bar_style") in ("success", "danger"):  # a finished or abandoned bar
            for box, (_, bar, _) in self._boxes.items():
                if bar == comm_id and self.bars.pop(box, None):
                    self._changed()
        for box, (label, _, count) in self._boxes.items():
            if comm_id in (box, label, count):
                self._show(box, f"{self._texts.get(label, '')}||{self._texts.get(count, '')}")

    def _show(self, bar_id: str, text: str) -> None:
        match = self._BAR.match(text)
        if not match:
            return
        label, n, total = (match["label"] or "").strip(), int(match["n"]), int(match["total"])
        if n >= total:
            self.bars.pop(bar_id, None)
        else:
            self.bars[bar_id] = (label, n, total)
        self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self)


def _notebook_client_class():
    """papermill's notebook client, reporting cells and messages to a NotebookProgress, shutting down cleanly."""
    from jupyter_core.utils import run_sync
    from papermill.clientwrap import PapermillNotebookClient

    class LabNotebookClient(PapermillNotebookClient):
        def __init__(self, nb_man, progress: NotebookProgress | None = None, **kwargs):
            if progress is not None:
                kwargs["on_cell_execute"] = lambda cell, cell_index: progress.cell_started(
                    cell, cell_index, self.nb.cells
                )
            super().__init__(nb_man, **kwargs)
            self.progress = progress

        def process_message(self, msg, cell, cell_index):
            if self.progress is not None:
                self.progress.message(msg)
            return super().process_message(msg, cell, cell_index)

        def execute(self, **kwargs):
            """papermill's ``execute``, plus waiting for the kernel to go idle after its last reply.

            jupyter_client interrupts (SIGINT) a kernel before shutting it down; one still finishing its last
            request then logs "KeyboardInterrupt caught in kernel" although nothing went wrong.

            The heartbeat channel is stopped here too, while the kernel still answers. nbclient shuts the
            kernel down first and stops the channels after; a heartbeat thread caught mid-ping by the shutdown
            can then wait forever, and stopping the channels waits on it (a test run hung there once).
            """
            self.reset_execution_trackers()
            with self.setup_kernel(**kwargs):
                try:
                    self.papermill_execute_cells()
                    msg_id = self.kc.kernel_info()
                    info_msg = self.wait_for_reply(msg_id)
                    self.nb.metadata["language_info"] = info_msg["content"]["language_info"]
                    self.set_widgets_metadata()
                    with contextlib.suppress(Exception):  # queue.Empty after 10 s: shut down anyway
                        while True:
                            msg = run_sync(self.kc.get_iopub_msg)(timeout=10)
                            parent = msg["parent_header"].get("msg_id")
                            if parent == msg_id and msg["content"].get("execution_state") == "idle":
                                break
                finally:  # also after a failed cell or Ctrl-C, when the kernel may still be busy
                    if self.kc.hb_channel.is_alive():
                        self.kc.hb_channel.stop()  # while the kernel is alive: see the docstring
            return self.nb

    return LabNotebookClient


def _kernel_config():
    """Kernel manager settings: CurveZMQ encryption where the kernel supports it (ipykernel >= 7 warns without)."""
    from jupyter_client.manager import KernelManager
    from traitlets.config import Config

    if "transport_encryption" not in KernelManager.class_trait_names():  # jupyter_client < 8.10
        return Config()
    return Config({"KernelManager": {"transport_encryption": "auto"}})


def papermill_engine() -> str:
    """Register the papermill engine ``labutils`` (papermill's NBClientEngine with the client above) and return
    its name, for ``papermill.execute_notebook(..., engine_name=papermill_engine())``."""
    from papermill.engines import NBClientEngine, papermill_engines

    class LabEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(
            cls, nb_man, kernel_name, progress=None, kernel_log=None, start_timeout=60, **kwargs
        ):
            client = _notebook_client_class()(
                nb_man,
                progress=progress,
                kernel_name=kernel_name,
                startup_timeout=start_timeout,
                config=_kernel_config(),
                log=logging.getLogger("papermill"),
            )
            if kernel_log is None:
                return client.execute()
            with open(kernel_log, "w") as stderr:  # the kernel process's own stderr (see _run_one)
                return client.execute(stderr=stderr)

    papermill_engines.register("labutils", LabEngine)
    return "labutils"


class _ProgressBar:
    """One tqdm bar over the code cells of every notebook of a run, its postfix saying where the run is."""

    def __init__(self, paths: list[Path], enabled: bool):
        from tqdm.auto import tqdm

        # +1: the parameters cell papermill injects
        self.sizes = [sum(c.get("cell_type") == "code" for c in json.loads(p.read_text())["cells"]) + 1 for p in paths]
        self.bar = tqdm(total=sum(self.sizes), unit="cell", disable=not enabled, dynamic_ncols=True)
        self.index, self.done, self.failed, self.shown = 0, 0, 0, 0.0

    def start(self, index: int, stem: str) -> None:
        self.index = index
        self.bar.set_description(f"{stem} ({index + 1}/{len(self.sizes)})", refresh=False)

    def __call__(self, progress: NotebookProgress) -> None:
        self.bar.n = self.done + max(progress.cell - 1, 0)
        failed = [f"{self.failed} failed"] if self.failed else []
        self.bar.set_postfix_str(", ".join([progress.describe(), *failed]), refresh=False)
        if time.monotonic() - self.shown > 0.5:  # bars inside a cell update many times a second
            self.shown = time.monotonic()
            self.bar.refresh()

    def finish(self, ok: bool) -> None:
        self.done += self.sizes[self.index]
        self.failed += not ok
        self.bar.n = self.done
        self.bar.set_postfix_str(f"{self.failed} failed" if self.failed else "", refresh=True)

    def close(self) -> None:
        self.bar.close()


def run_notebooks(
    paths: list[Path],
    profile: str,
    parameters: dict[str, Any] | None = None,
    runs: Path | None = None,
    progress: bool = True,
    on_progress: Callable[[NotebookProgress], None] | None = None,
) -> list[NotebookRun]:
    """Execute notebooks with papermill into ``runs/<stem>/<stem>.ipynb`` and write ``runs/REPORT.md``.

    ``parameters`` are checked first (``check_parameters``): a mistake raises ValueError before any kernel
    starts. A failing notebook does not stop the others; its cell and error are returned and listed in the
    report. ``progress`` shows one bar over all code cells with the running cell and training bars;
    ``on_progress`` receives the same ``NotebookProgress`` after every change. An interrupt (Ctrl-C) stops the
    whole run with :class:`NotebookInterrupted` after writing the report of the notebooks that finished.
    """
    from labutils import check_profile
    from labutils.results import build_report, runs_dir

    check_profile(profile)
    overrides = check_parameters(paths, parameters)
    runs = Path(runs or runs_dir())
    results: list[NotebookRun] = []
    bar = _ProgressBar(paths, progress)
    # Kernels inherit these; LABS_PROFILE also reaches a notebook whose parameters cell has no PROFILE.
    environment = dict(LABS_RUNS=str(runs), LABS_PROFILE=profile, MPLBACKEND=os.environ.get("MPLBACKEND", "Agg"))
    try:
        with _environment(**environment):
            for index, path in enumerate(paths):
                bar.start(index, path.stem)
                watch = NotebookProgress(path.stem, on_change=_both(bar, on_progress))
                if "PROFILE" in notebook_parameters(path).defaults:
                    overrides[path] = {"PROFILE": profile, **overrides[path]}
                results.append(_run_one(path, overrides[path], runs, watch))
                bar.finish(results[-1].ok)
    finally:  # an interrupt stops the run, but the notebooks that finished are still reported
        bar.close()
        build_report(runs, failures={r.stem: r.error for r in results if not r.ok})
    return results


def _both(first: Callable, second: Callable | None) -> Callable:
    return first if second is None else lambda progress: (first(progress), second(progress))


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


def _run_one(path: Path, parameters: dict[str, Any], runs: Path, watch: NotebookProgress | None = None) -> NotebookRun:
    """Execute one notebook into ``runs/<stem>/<stem>.ipynb``; a failure is returned, not raised."""
    import papermill as pm

    out = runs / path.stem / f"{path.stem}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    (out.parent / "metrics.json").unlink(missing_ok=True)  # a failed run must not report stale numbers
    # The kernel process's own stderr: not the cells' output (that is in the notebook) but the kernel's messages
    # about itself, e.g. a traceback that ipykernel 7.4 sometimes logs when its sockets close during a normal
    # shutdown. Kept in a file, so that a successful run prints only its progress and summary.
    kernel_log = out.parent / "kernel.log"
    start = time.perf_counter()
    try:
        pm.execute_notebook(
            str(path),
            str(out),
            parameters=parameters,
            cwd=str(path.parent),
            kernel_name="python3",
            engine_name=papermill_engine(),
            progress_bar=False,
            progress=watch,
            kernel_log=kernel_log,
        )
    except KeyboardInterrupt:
        cell = f", cell {watch.cell}" if watch is not None and watch.cell else ""
        raise NotebookInterrupted(f"interrupted in {path.stem}{cell}; finished runs are cached") from None
    except Exception as exc:  # report and go on: one broken lab must not hide the others
        error = describe_failure(exc)
        if kernel_log.exists() and kernel_log.stat().st_size:
            error += f" (the kernel's own messages are in {kernel_log})"
        return NotebookRun(path.stem, False, time.perf_counter() - start, out, error)
    finally:
        if kernel_log.exists() and not kernel_log.stat().st_size:
            kernel_log.unlink()
    return NotebookRun(path.stem, True, time.perf_counter() - start, out)
