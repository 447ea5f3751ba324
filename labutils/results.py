"""What a lab leaves behind: ``runs/<notebook-stem>/metrics.json``, its figures, and the run report.

A notebook records its numbers through one :class:`LabResults`:

>>> res = LabResults("01_numpy_mlp", profile=PROFILE, seed=SEED, params={"epochs": EPOCHS})
>>> res.dataset(splits.info)                     # provenance of every dataset used
>>> res["xor_accuracy"] = 1.0                    # any JSON-able value
>>> res.table("sin_mse", rows, caption="Test MSE of sin(x) fits")   # list of dicts
>>> res.figure(fig, "activations")               # runs/01_numpy_mlp/activations.png
>>> res.reference("xor_accuracy", 1.0, "XOR with 2 hidden units", source="Goodfellow et al. 2016, 6.1")
>>> res.compare()                                # references beside this run's numbers (a DataFrame)
>>> res.save()                                   # writes metrics.json

Tests and the report read these files; nobody parses notebook text for numbers.
``$LABS_RUNS`` moves ``runs/`` elsewhere.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import platform
import re
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from labutils.util import atomic_write_json, runs_dir

METRICS_FILE = "metrics.json"
_VERSIONED = ("numpy", "torch", "torchvision", "scikit-learn", "matplotlib", "wandb")
_STEM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries a result depends on (None when not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for dist in _VERSIONED:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    from labutils import __version__

    versions["labutils"] = __version__
    return versions


def environment() -> dict[str, Any]:
    """What this machine offers the labs: library versions, device, threads, wandb mode, folders."""
    import torch

    from labutils import get_device
    from labutils.data import data_dir
    from labutils.tracking import resolve_mode

    return {
        **library_versions(),
        "device": str(get_device()),
        "cuda_available": torch.cuda.is_available(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "wandb_mode": resolve_mode(),
        "data_dir": str(data_dir()),
        "runs_dir": str(runs_dir()),
    }


def to_jsonable(value: Any) -> Any:
    """Convert NumPy/torch scalars and arrays, paths and dataclasses to plain JSON values.

    Non-finite floats become ``None`` so that metrics.json stays strict JSON.
    """
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (str, bool)) or value is None:
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "as_dict"):
        return to_jsonable(value.as_dict())
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return to_jsonable(value.tolist())
    if hasattr(value, "item"):
        return to_jsonable(value.item())
    raise TypeError(f"Cannot store a {type(value).__name__} in metrics.json: use numbers, strings, lists or dicts.")


class LabResults:
    """Collects one notebook run's numbers, tables and figures and writes them to ``runs/<stem>/``.

    ``stem`` is the notebook's file name without ``.ipynb``; the wall-time clock starts here.
    """

    def __init__(self, stem: str, *, profile: str, seed: int, params: dict[str, Any] | None = None):
        from labutils import check_profile

        if not _STEM.match(stem):
            raise ValueError(f"Notebook stem {stem!r} is not a plain file name (letters, digits, '_', '-', '.').")
        self.stem = stem
        self.profile = check_profile(profile)
        self.seed = int(seed)
        self.params = dict(params or {})
        self.datasets: dict[str, dict[str, Any]] = {}
        self.metrics: dict[str, Any] = {}
        self.tables: dict[str, dict[str, Any]] = {}
        self.figures: list[dict[str, str]] = []
        self.references: list[dict[str, Any]] = []
        self._start = time.perf_counter()
        self.dir = runs_dir() / stem
        self.dir.mkdir(parents=True, exist_ok=True)

    # -- recording -----------------------------------------------------------------------------
    def dataset(self, info: Any) -> None:
        """Record where a dataset came from (a ``DatasetInfo`` or a dict with a ``name`` key)."""
        record = to_jsonable(info)
        if not isinstance(record, dict) or "name" not in record:
            raise ValueError("A dataset record needs at least a 'name' (pass labutils.data's DatasetInfo).")
        self.datasets[record["name"]] = record

    def __setitem__(self, key: str, value: Any) -> None:
        self.metrics[key] = to_jsonable(value)

    def __getitem__(self, key: str) -> Any:
        return self.metrics[key]

    def update(self, **values: Any) -> None:
        for key, value in values.items():
            self[key] = value

    def table(self, name: str, rows: list[dict[str, Any]], caption: str = "") -> list[dict[str, Any]]:
        """Store a table (a list of dicts with the same keys); the report renders it. Returns the rows."""
        rows = to_jsonable(list(rows))
        if not rows or not all(isinstance(r, dict) for r in rows):
            raise ValueError(f"Table {name!r} must be a non-empty list of dicts (one per row).")
        self.tables[name] = {"caption": caption, "rows": rows}
        return rows

    def figure(self, fig: Any, name: str, caption: str = "", dpi: int = 110) -> Path:
        """Save a matplotlib figure as ``runs/<stem>/<name>.png`` and list it in the report."""
        if not _STEM.match(name):
            raise ValueError(f"Figure name {name!r} must be a plain file name without extension.")
        path = self.dir / f"{name}.png"
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        self.figures = [f for f in self.figures if f["file"] != path.name]
        self.figures.append({"file": path.name, "caption": caption or name.replace("_", " ")})
        return path

    # -- references ----------------------------------------------------------------------------
    def reference(self, metric: str | list[str], value: Any, what: str, source: str) -> None:
        """Record a number this lab compares with: ``metric`` is where this run's own number lives in the
        metrics (a key, or a dotted path such as ``"accuracy_by_depth.plain.32"``), ``value`` the reference
        (a number, or a ``(low, high)`` range), ``what`` what it measured and ``source`` where it comes from
        (a paper, or a seed report such as "students of this lab, full profile")."""
        if not isinstance(value, (int, float)) and not (isinstance(value, (list, tuple)) and len(value) == 2):
            raise ValueError(f"Reference value {value!r} must be a number or a (low, high) range.")
        if not what or not source:
            raise ValueError("A reference needs both what it measured and its source.")
        # one reference per metric and source: a paper's number and a course run's can sit beside the same metric
        self.references = [r for r in self.references if (r["metric"], r["source"]) != (metric, source)]
        metric = metric if isinstance(metric, str) else [str(k) for k in metric]
        self.references.append({"metric": metric, "reference": to_jsonable(value), "what": what, "source": source})

    def compare(self):
        """The references beside this run's numbers, as a DataFrame (``measured`` is None until recorded)."""
        import pandas as pd

        return pd.DataFrame(reference_rows(self.as_dict()))

    # -- writing -------------------------------------------------------------------------------
    def as_dict(self) -> dict[str, Any]:
        return {
            "notebook": self.stem,
            "profile": self.profile,
            "seed": self.seed,
            "params": to_jsonable(self.params),
            "datasets": self.datasets,
            "synthetic_data": any(d.get("synthetic") for d in self.datasets.values()),
            "versions": library_versions(),
            "wall_time_s": round(time.perf_counter() - self._start, 2),
            "device": _device_used(),
            "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "metrics": self.metrics,
            "tables": self.tables,
            "figures": self.figures,
            "references": self.references,
        }

    def save(self) -> Path:
        """Write ``metrics.json`` atomically and return its path."""
        return atomic_write_json(self.dir / METRICS_FILE, self.as_dict())


TIMINGS_FILE = Path(__file__).with_name("timings.json")  # wall times measured on the course machine
PROFILE_MEANING = {
    "quick": "a smoke run: data subsets and one or two epochs, minutes on a laptop CPU",
    "full": "the lab as designed: full datasets and the epochs the lab needs",
}


def _device_used() -> str:
    """The torch device a lab ran on; "cpu" for a NumPy lab, which never imports torch."""
    if "torch" not in sys.modules:
        return "cpu"
    from labutils import get_device

    return str(get_device())


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def recorded_seconds(stem: str, profile: str, device: str) -> tuple[float, str] | None:
    """How long notebook ``stem`` took in ``profile`` on a ``device`` ("cpu", "cuda", "mps"), and where that
    number comes from: this machine's last finished run (``runs/<stem>/metrics.json``), else the table measured
    on the course machine (``labutils/timings.json``). None when neither has one."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        last = load_metrics(stem)
        if last["profile"] == profile and str(last["device"]).split(":")[0] == device:
            return float(last["wall_time_s"]), "your last run"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        table = json.loads(TIMINGS_FILE.read_text(encoding="utf-8"))
        return float(table[stem][profile][device]), "measured on the course's 2-core machine"
    return None


def profile_banner(stem: str, profile: str, device: str | None = None) -> str:
    """The first thing a lab prints: its profile, about how long that takes on this device, how to switch.

    ``device``: where the lab computes; default the torch device :func:`labutils.get_device` picks ("cpu" for
    the NumPy labs, which never touch torch)."""
    from labutils import check_profile

    profile = check_profile(profile)
    if device is None:
        from labutils import get_device

        device = get_device().type
    other = "full" if profile == "quick" else "quick"
    found = recorded_seconds(stem, profile, device)
    took = f"about {_minutes(found[0])} on {device} ({found[1]})" if found else f"no timing recorded on {device} yet"
    return (
        f"Profile {profile!r} ({PROFILE_MEANING[profile]}); {took}. To switch, set PROFILE = {other!r} in the "
        f"parameters cell, or run `make labs PROFILE={other}`."
    )


def load_metrics(stem: str, root: Path | None = None) -> dict[str, Any]:
    """Read ``<runs>/<stem>/metrics.json``; a clear error if the notebook has not been run."""
    path = Path(root or runs_dir()) / stem / METRICS_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"No results for {stem!r}: {path} does not exist. Run the notebook first (python -m labutils run {stem})."
        )
    return json.loads(path.read_text())


def metric_at(metrics: dict[str, Any], path: str | list[str]) -> Any:
    """The value at a key, a dotted path, or a list of keys (for keys that contain dots) of a metrics dict
    (None if absent)."""
    if isinstance(path, str) and path in metrics:
        return metrics[path]
    value: Any = metrics
    for part in path.split(".") if isinstance(path, str) else path:
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def reference_rows(m: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per recorded reference: what, the reference, its source, and this run's number with its profile."""
    return [
        {
            "what": r["what"],
            "reference": r["reference"],
            "source": r["source"],
            f"this run ({m['profile']})": metric_at(m.get("metrics", {}), r["metric"]),
        }
        for r in m.get("references", [])
    ]


# -- the run report ----------------------------------------------------------------------------
def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        text = json.dumps(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return "" if value is None else str(value).replace("|", "\\|")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Render a list of dicts as a GitHub-flavoured markdown table (columns in first-seen order)."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def _provenance_line(ds: dict[str, Any]) -> str:
    flag = " — **synthetic stand-in, not the real dataset**" if ds.get("synthetic") else ""
    return f"- `{ds['name']}`: {ds.get('source', 'unknown source')}{flag}"


def build_report(root: Path | None = None, failures: dict[str, str] | None = None) -> Path:
    """Write ``<runs>/REPORT.md``: one section per notebook that left a metrics.json.

    ``failures`` maps notebook stems to an error summary, listed at the top.
    """
    root = Path(root or runs_dir())
    root.mkdir(parents=True, exist_ok=True)
    found = sorted(p.parent.name for p in root.glob(f"*/{METRICS_FILE}"))
    out = ["# Deep Learning Labs — run report", ""]
    if failures:
        out += ["## Failed notebooks", ""]
        out += [f"- `{stem}`: {msg}" for stem, msg in sorted(failures.items())] + [""]
    out += ["| notebook | profile | data | wall time (s) |", "|---|---|---|---|"]
    results = {stem: load_metrics(stem, root) for stem in found}
    for stem, m in results.items():
        data = "synthetic stand-in" if m.get("synthetic_data") else ("real" if m.get("datasets") else "none")
        out.append(f"| [{stem}](#{stem.replace('_', '-').lower()}) | {m['profile']} | {data} | {m['wall_time_s']} |")
    out.append("")
    for stem, m in results.items():
        out += [
            f"## {stem}",
            "",
            f"Profile `{m['profile']}`, seed {m['seed']}, wall time {m['wall_time_s']} s, "
            f"finished {m.get('finished', '?')}.",
            "",
        ]
        if m.get("datasets"):
            out += ["Data:"] + [_provenance_line(ds) for ds in m["datasets"].values()] + [""]
        scalars = {k: v for k, v in m.get("metrics", {}).items() if isinstance(v, (int, float, str, bool))}
        if scalars:
            out += [markdown_table([{"metric": k, "value": v} for k, v in scalars.items()]), ""]
        if m.get("references"):
            note = " (a synthetic stand-in: not comparable)" if m.get("synthetic_data") else ""
            out += [f"**References beside this run, profile `{m['profile']}`{note}**", ""]
            out += [markdown_table(reference_rows(m)), ""]
        for name, table in m.get("tables", {}).items():
            out += [f"**{table.get('caption') or name}**", "", markdown_table(table["rows"]), ""]
        for fig in m.get("figures", []):
            out += [f"![{fig['caption']}]({stem}/{fig['file']})", ""]
    path = root / "REPORT.md"
    path.write_text("\n".join(out))
    return path
