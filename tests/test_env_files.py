"""requirements.txt and environment.yml describe one environment, admitting the pinned torch builds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
REQUIRED = {
    "torch",
    "torchvision",
    "jupyterlab",
    "ipywidgets",
    "matplotlib",
    "seaborn",
    "wandb",
    "nbval",
    "papermill",
    "tqdm",
    "scikit-learn",
    "numpy",
    "pytest",
}


def _requirements() -> dict[str, Requirement]:
    lines = [ln.split("#")[0].strip() for ln in (REPO / "requirements.txt").read_text().splitlines()]
    return {r.name.lower(): r for r in (Requirement(ln) for ln in lines if ln)}


def _environment() -> tuple[str, dict[str, Requirement]]:
    text = (REPO / "environment.yml").read_text()
    python = re.search(r"^\s*-\s*python\s*=\s*([\d.]+)\s*$", text, re.M)
    pip_lines = re.findall(r"^\s{6,}-\s*(\S.*?)\s*$", text, re.M)
    return (python.group(1) if python else ""), {r.name.lower(): r for r in map(Requirement, pip_lines)}


def test_requirements_name_everything_the_labs_need():
    assert REQUIRED <= set(_requirements())


def test_environment_yml_matches_requirements_exactly():
    python, env = _environment()
    assert python == "3.11"
    req = _requirements()
    assert set(env) == set(req), (
        f"only in environment.yml: {set(env) - set(req)}; only in requirements.txt: {set(req) - set(env)}"
    )
    for name in req:
        assert str(env[name].specifier) == str(req[name].specifier), name


@pytest.mark.parametrize("name, allowed, refused", [("torch", "2.14.1", "2.15.0"), ("torchvision", "0.29.1", "0.30.0")])
def test_torch_ranges_admit_the_local_builds_and_never_force_newer(name, allowed, refused):
    spec = _requirements()[name].specifier
    assert Version(allowed) in spec and Version(refused) not in spec


def test_every_requirement_is_a_range_not_a_pin():
    for req in _requirements().values():
        assert not any(s.operator == "==" for s in req.specifier), f"{req} is pinned"
