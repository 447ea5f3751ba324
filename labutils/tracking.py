"""Experiment tracking with wandb that never prompts and never needs a network.

Mode resolution (first match wins):
1. ``WANDB_MODE`` set (``online``, ``offline``, ``disabled``) is honoured as given.
2. An API key is available (``WANDB_API_KEY`` or a ``~/.netrc`` entry): online.
3. Otherwise offline: runs are written under ``$WANDB_DIR`` (default ``runs/wandb``)
   and can be uploaded later with ``wandb sync``.

If wandb is not installed, or fails to start, a ``Tracker`` becomes a no-op that says so
once: tracking is a convenience and must never break a lab.
"""

from __future__ import annotations

import netrc
import os
import warnings
from pathlib import Path
from typing import Any

from labutils.util import runs_dir


def _has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        auth = netrc.netrc().authenticators("api.wandb.ai")
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return bool(auth and auth[2])


def resolve_mode() -> str:
    """The wandb mode a new run will use: ``online``, ``offline`` or ``disabled``."""
    mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if mode in {"online", "offline", "disabled"}:
        return mode
    if mode == "dryrun":
        return "offline"
    if mode:
        raise ValueError(f"WANDB_MODE={mode!r} is not understood: use online, offline or disabled.")
    return "online" if _has_credentials() else "offline"


class Tracker:
    """A thin, offline-safe wrapper around one wandb run.

    >>> tracker = Tracker(project="deep-learning-labs", name="04_residual_mlp", config={"depth": 8})
    >>> tracker.log({"train/loss": 0.3}, step=10)
    >>> tracker.finish()
    """

    def __init__(
        self,
        project: str = "deep-learning-labs",
        name: str | None = None,
        config: dict[str, Any] | None = None,
        group: str | None = None,
        tags: list[str] | None = None,
        mode: str | None = None,
        dir: str | os.PathLike | None = None,
    ):
        self.mode = mode or resolve_mode()
        self.run = None
        if self.mode == "disabled":
            return
        try:
            import wandb
        except ImportError:
            warnings.warn("wandb is not installed: tracking is off for this run.", stacklevel=2)
            self.mode = "disabled"
            return
        wandb_dir = Path(dir or os.environ.get("WANDB_DIR") or runs_dir() / "wandb")
        wandb_dir.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("WANDB_SILENT", "true")
        try:
            self.run = wandb.init(
                project=project,
                name=name,
                config=config or {},
                group=group,
                tags=tags,
                mode=self.mode,
                dir=str(wandb_dir),
                reinit="finish_previous",
                settings=wandb.Settings(console="off", silent=True),
            )
        except Exception as exc:  # tracking must never take a lab down with it
            warnings.warn(f"wandb could not start ({exc}); tracking is off for this run.", stacklevel=2)
            self.mode, self.run = "disabled", None

    @property
    def enabled(self) -> bool:
        return self.run is not None

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

    def summary(self, **values: Any) -> None:
        if self.run is not None:
            self.run.summary.update(values)  # one message to wandb, not one per key

    def log_artifact(self, path: str | os.PathLike, name: str, type: str = "model") -> None:
        """Attach a file (e.g. the best checkpoint) to the run as a versioned artifact."""
        if self.run is None:
            return
        import wandb

        artifact = wandb.Artifact(name=name, type=type)
        artifact.add_file(str(path))
        self.run.log_artifact(artifact)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc) -> None:
        self.finish()
