"""labutils uses public torch APIs only: no ``torch._…`` names, no ``Tensor._version``, no ``_foreach`` kernels.

Private names change or vanish between torch releases without notice, and students read this package as an
example of how torch is meant to be used. The check is textual, over every .py file under labutils/ (code,
comments and docstrings alike), and a failure names each offending file:line.
"""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "labutils"
PRIVATE = re.compile(r"\btorch\._(?!_)|\._version\b|_foreach")  # (torch.__version__ is public)


def private_api_uses(root: Path) -> list[str]:
    """``"file:line: text"`` for every line of a .py file under ``root`` that names a private torch API."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if PRIVATE.search(line):
                found.append(f"{path.relative_to(root.parent)}:{number}: {line.strip()}")
    return found


def test_the_check_finds_each_kind_of_private_use(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "a.py").write_text("import torch\nx = torch._C\ny = 1\n")
    (package / "sub" / "b.py").write_text("v = t._version\nn = torch._foreach_norm(gs)\nok = t.version\n")
    (package / "c.py").write_text(
        "from torch import nn  # public: torch.nn, torch.__version__; my_torch._x is not torch\n"
    )
    assert private_api_uses(package) == [
        "pkg/a.py:2: x = torch._C",
        "pkg/sub/b.py:1: v = t._version",
        "pkg/sub/b.py:2: n = torch._foreach_norm(gs)",
    ]


def test_labutils_uses_no_private_torch_api():
    found = private_api_uses(PACKAGE)
    assert not found, "private torch APIs in labutils (use public ones):\n" + "\n".join(found)
