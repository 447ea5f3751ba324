"""Notebook parameters: each profile-dependent default written once, explicit values always winning.

A lab's first code cell (tagged ``parameters`` for papermill) holds plain assignments. A knob whose
default depends on the profile is ``None`` there, and its two defaults live in one ``knobs`` call in
the next cell, nowhere else:

>>> # parameters cell
>>> PROFILE = os.environ.get("LABS_PROFILE", "full")
>>> SEED = 0
>>> DEPTHS = None  # hidden linear layers per network
>>> WIDTH = 16
>>> # next cell
>>> P = labutils.knobs(PROFILE, globals(), quick=dict(DEPTHS=[2, 32]), full=dict(DEPTHS=[2, 8, 16, 32, 64]))

``knobs`` fills every knob still ``None`` from the profile's table (a value set in the cell or injected by
papermill wins), checks that each value has the type of its defaults (a string where a list of depths
is expected is one clear ``ValueError`` naming the knob and the value), writes the resolved values back
into the notebook's namespace, and returns all parameters (every UPPER_CASE name of the parameters cell)
as a dict for ``LabResults(params=...)``.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Mapping, MutableMapping
from typing import Any

_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
_PLAIN = (type(None), bool, numbers.Number, str, list, tuple, dict)


def type_name(value: Any) -> str:
    """A reader's name for the type of a knob's value: 'a list', 'an integer', ..."""
    if value is None:
        return "None"
    if isinstance(value, bool):
        return "True/False"
    if isinstance(value, numbers.Integral):
        return "an integer"
    if isinstance(value, numbers.Real):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a dict"
    return type(value).__name__


def compatible(value: Any, reference: Any) -> bool:
    """Whether ``value`` may stand where ``reference`` (a default) stands.

    None is accepted where the default is None; an integer where a number is expected; a list's
    elements must fit the reference list's first element (an empty reference list accepts any list).
    """
    if reference is None:
        return True
    if value is None:
        return False
    if isinstance(reference, bool):
        return isinstance(value, bool)
    if isinstance(reference, numbers.Integral):
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if isinstance(reference, numbers.Real):
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if isinstance(reference, str):
        return isinstance(value, str)
    if isinstance(reference, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            return False
        return not reference or all(compatible(v, reference[0]) for v in value)
    if isinstance(reference, dict):
        return isinstance(value, dict)
    return isinstance(value, type(reference))


def check_value(name: str, value: Any, references: list[Any]) -> None:
    """Raise one ValueError unless ``value`` fits at least one of the knob's ``references`` (its defaults)."""
    refs = [r for r in references]
    if not refs or any(compatible(value, r) for r in refs):
        return
    expected = " or ".join(dict.fromkeys(type_name(r) for r in refs))
    example = next((r for r in refs if r is not None), None)
    hint = f" such as {example!r}" if example is not None else ""
    raise ValueError(f"Parameter {name}={value!r} is {type_name(value)}, but {name} takes {expected}{hint}.")


def knobs(
    profile: str,
    namespace: MutableMapping[str, Any],
    *,
    quick: Mapping[str, Any] | None = None,
    full: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Resolve a notebook's parameters for ``profile``; see the module docstring.

    ``namespace`` is the notebook's ``globals()``. ``quick`` and ``full`` must name the same knobs, and each
    must be assigned (``None``) in the parameters cell. Returns ``{NAME: value}`` for every plain UPPER_CASE
    name in ``namespace`` (the parameters), after resolution.
    """
    from labutils import check_profile

    profile = check_profile(profile)
    table = {"quick": dict(quick or {}), "full": dict(full or {})}
    if set(table["quick"]) != set(table["full"]):
        odd = sorted(set(table["quick"]) ^ set(table["full"]))
        raise ValueError(
            f"Profile defaults must name the same knobs in quick and full; {', '.join(odd)} is in one only."
        )
    for name in table["quick"]:
        if not _NAME.match(name):
            raise ValueError(f"Knob names are UPPER_CASE like the parameters cell's: {name!r} is not.")
        if name not in namespace:
            raise ValueError(
                f"{name} has profile defaults but is not assigned in the parameters cell (add {name} = None)."
            )
        value = namespace[name]
        if value is None:
            value = table[profile][name]
        check_value(name, value, [table["quick"][name], table["full"][name]])
        namespace[name] = list(value) if isinstance(value, tuple) else value
    return {
        name: value
        for name, value in namespace.items()
        if _NAME.match(name) and isinstance(value, _PLAIN) and not name.startswith("_")
    }


__all__ = ["knobs", "check_value", "compatible", "type_name"]
