"""Full-profile claims: a lab's claims test reads the metrics.json of a full run where one exists, else skips.

``make labs PROFILE=full`` (or ``python -m labutils run NN`` with ``LABS_PROFILE=full``) writes
``runs/<stem>/metrics.json``; ``LABS_FULL_RUNS`` points elsewhere. The test session's own ``LABS_RUNS`` is a
temporary folder of quick runs, so it is not consulted.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def full_metrics(stem: str) -> dict:
    """The metrics of a full-profile run of notebook ``stem``; skips the test when there is none."""
    path = Path(os.environ.get("LABS_FULL_RUNS") or REPO / "runs") / stem / "metrics.json"
    if not path.exists():
        pytest.skip(f"no full-profile run of {stem}: {path} does not exist (run `make labs PROFILE=full`)")
    metrics = json.loads(path.read_text())
    if metrics.get("profile") != "full":
        pytest.skip(f"{path} holds a {metrics.get('profile')!r} run, not a full one")
    return metrics
