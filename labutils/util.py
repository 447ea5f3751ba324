"""Small shared utilities: the repository root and runs folder, atomic file writes, argument validation.

Atomic writes go to a temporary file in the target's folder and are renamed over the target with
``os.replace``, so a crash or an interrupt leaves the previous file intact, never half a file. The
temporary's name carries the writer's process id (``.<name>.<pid>.<random>.tmp``): a writer killed
outright (SIGKILL, power loss) cannot clean up after itself, so the next write to the same target
removes the temporaries whose process is gone.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parents[1]


def runs_dir() -> Path:
    """Where lab outputs go: ``$LABS_RUNS`` if set, else ``runs/`` at the repository root."""
    return Path(os.environ.get("LABS_RUNS") or REPO_ROOT / "runs")


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def clean_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove ``.<name>.<pid>.*.tmp`` files next to ``path`` left by writers that no longer run.

    Returns the removed paths. Temporaries of live processes (a concurrent writer) are kept.
    """
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        parts = tmp.name[len(path.name) + 2 :].split(".")
        if not parts or not parts[0].isdigit() or _process_alive(int(parts[0])):
            continue
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed.append(tmp)
    return removed


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """``with atomic_open(p, "w") as fh: ...`` writes ``p`` atomically (see the module docstring)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', not {mode!r}.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFullError(path) from None
        raise
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if is_disk_full(exc):
            raise DiskFullError(path) from None
        raise


class DiskFullError(OSError):
    """A file could not be written for lack of space (or quota); the file it was to replace is unchanged."""

    def __init__(self, path: str | os.PathLike):
        super().__init__(f"No space left to write {path}: free some space and run again (the previous file is kept).")
        self.path = Path(path)


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(fh)`` on a binary file handle and put the result at ``path`` atomically."""
    with atomic_open(path, "wb") as fh:
        write(fh)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_open(path, "w") as fh:
        fh.write(text)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """JSON with indentation and a final newline; NaN/inf are refused (they are not JSON)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def check_int(name: str, value: Any, minimum: int = 1, *, allow_none: bool = False) -> int | None:
    """``value`` as an int if it is an integer >= ``minimum`` (None too with ``allow_none``), else one ValueError.

    Booleans are refused: ``epochs=True`` is a mistake, not 1.
    """
    import numbers

    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        accepted = f"an integer >= {minimum}" + (" or None" if allow_none else "")
        raise ValueError(f"{name}={value!r} is not possible: use {accepted}.")
    return int(value)


def check_positive(name: str, value: Any) -> float:
    """``value`` as a float if it is a finite real number > 0 (a learning rate, a decay factor), else one ValueError."""
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}={value!r} is not possible: use a finite number > 0.")
    return float(value)


def check_probability(name: str, value: Any, *, include_one: bool = False) -> float:
    """``value`` as a float if it lies in [0, 1) (``include_one``: [0, 1]), else one ValueError.

    A dropout rate of 1 would drop every unit, so ``include_one`` is off unless 1 means something.
    """
    import numbers

    high = "1]" if include_one else "1)"
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 <= value
    if not ok or not (value <= 1 if include_one else value < 1):
        raise ValueError(f"{name}={value!r} is not possible: use a probability in [0, {high}.")
    return float(value)


def check_choice(name: str, value: Any, choices: tuple | list) -> Any:
    """``value`` if it is one of ``choices``, else one ValueError listing them."""
    if value not in choices:
        raise ValueError(f"Unknown {name} {value!r}: choose one of {', '.join(map(str, choices))}.")
    return value


def _shape(value: Any) -> tuple[int, ...]:
    if hasattr(value, "shape"):
        return tuple(value.shape)
    import numpy as np  # nested lists

    return tuple(np.shape(value))


def state_mismatch(expected: Mapping[str, tuple[int, ...]], state: Mapping[str, Any]) -> str | None:
    """Compare a saved state (``{name: array or tensor}``) with a model's ``{name: shape}``.

    None when the names and shapes agree; otherwise one phrase naming the first differences, e.g.
    ``"1 tensor(s) differ in shape (e.g. '0.weight': (16, 8) saved, (32, 8) in the model)"``, for the
    caller to put into its own sentence. Works for NumPy arrays and torch tensors alike.
    """
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [(k, _shape(state[k]), tuple(s)) for k, s in expected.items() if k in state]
    wrong = [w for w in wrong if w[1] != w[2]]
    parts = []
    if wrong:
        k, saved, now = wrong[0]
        parts.append(f"{len(wrong)} tensor(s) differ in shape (e.g. {k!r}: {saved} saved, {now} in the model)")
    if missing:
        parts.append(f"{len(missing)} are missing from it (e.g. {missing[0]!r})")
    if unexpected:
        parts.append(f"{len(unexpected)} are not in the model (e.g. {unexpected[0]!r})")
    return "; ".join(parts) or None


__all__ = [
    "REPO_ROOT",
    "atomic_open",
    "atomic_write",
    "atomic_write_text",
    "atomic_write_json",
    "clean_stale_temporaries",
    "check_int",
    "check_choice",
    "check_positive",
    "check_probability",
    "state_mismatch",
]
