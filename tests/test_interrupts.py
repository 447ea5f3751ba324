"""Interrupts and damaged caches: Ctrl-C is one line and exit status 130, nothing finished is lost, nothing more
is started; a damaged or foreign run folder is named in one sentence and trained again, never shown."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from test_cli import _notebook, _without_progress
from test_experiment import InterruptingMLP, tiny

from labutils import experiment


def test_ctrl_c_during_a_notebook_is_one_line_and_exit_130(tmp_path):
    started = tmp_path / "started"
    slow = _notebook(
        tmp_path / "95_slow.ipynb", f"import pathlib, time\npathlib.Path({str(started)!r}).touch()\ntime.sleep(120)"
    )
    after = _notebook(tmp_path / "96_after.ipynb", "x = 1")
    runs = tmp_path / "runs"
    command = [
        sys.executable,
        "-m",
        "labutils",
        "run",
        str(slow),
        str(after),
        "--profile",
        "quick",
        "--runs",
        str(runs),
    ]
    # A terminal's Ctrl-C signals the whole foreground process group: the command and the kernel it started. A
    # foreground job takes SIGINT; a job started in the background by a non-interactive shell (and all it starts,
    # this test too) ignores it, so the command is given the terminal's default back.
    proc = subprocess.Popen(
        command,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not started.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert started.exists(), "the notebook's cell never started"
    os.killpg(proc.pid, signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"`labutils run` did not stop within 90 s of Ctrl-C; it printed:\n{out}\n{err}")
    assert proc.returncode == 130, err
    lines = _without_progress(err)
    assert lines == ["interrupted in 95_slow, cell 3; finished runs are cached"]  # after papermill's injected cell, err
    assert "Traceback" not in out + err
    assert not (runs / "96_after").exists()  # the run stops: the next notebook is not started
    assert (runs / "REPORT.md").exists()  # and what did finish is still reported


# -- the experiment cache: damaged or foreign run folders, and run_all after an interrupt -----------------------------


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("LABS_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


def damage(path, how: str) -> None:
    data = path.read_bytes()
    if how == "half":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "random":
        path.write_bytes(np.random.default_rng(0).bytes(max(len(data), 64)))
    elif how == "latin1":
        path.write_bytes('{"key": "caf\u00e9"'.encode("latin-1"))
    elif how == "braces":
        path.write_text("{}")


@pytest.mark.parametrize(
    "name, how",
    [
        ("model.pt", "half"),
        ("model.pt", "empty"),
        ("model.pt", "random"),
        ("evaluation.npz", "half"),
        ("result.json", "latin1"),
        ("result.json", "braces"),
        ("result.json", "half"),
    ],
)
def test_a_damaged_finished_run_is_named_in_one_sentence_and_trained_again(runs, capsys, name, how):
    first = experiment.run(tiny(), lab="lab", profile="quick", progress=False)
    capsys.readouterr()
    damage(first.dir / name, how)
    again = experiment.run(tiny(), lab="lab", profile="quick", progress=False)
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith(f"tiny: the cached run in {first.dir} is damaged (")
    assert out[0].endswith("); training it again.")
    assert not again.loaded and again.test.top1 == first.test.top1  # same recipe and seed: the same numbers
    reloaded = experiment.run(tiny(), lab="lab", profile="quick", progress=False)
    assert reloaded.loaded and reloaded.test.top1 == first.test.top1


def test_a_copied_run_folder_never_shows_another_recipes_numbers(runs, capsys):
    slow = experiment.run(tiny(lr=3e-3), lab="lab", profile="quick", progress=False)
    fast_recipe = tiny(lr=0.1)
    fast_key = experiment.recipe_key(fast_recipe, slow.dataset)
    shutil.copytree(slow.dir, slow.dir.parent / fast_key)  # a folder copied under the other recipe's name
    capsys.readouterr()
    fast = experiment.run(fast_recipe, lab="lab", profile="quick", progress=False)
    first_line = capsys.readouterr().out.splitlines()[0]
    assert (
        first_line == f"tiny: {slow.dir.parent / fast_key} holds the run {slow.key}, not {fast_key}; training it again."
    )
    assert not fast.loaded and fast.key == fast_key
    assert json.loads((fast.dir / "result.json").read_text())["key"] == fast_key


def test_run_all_stops_after_an_interrupted_run(runs, monkeypatch):
    recipes = {"a": tiny("a", model=InterruptingMLP), "b": tiny("b", model=InterruptingMLP, lr=0.01)}
    monkeypatch.setattr(InterruptingMLP, "interrupt_at", 32 + 3)  # in run a's second epoch
    monkeypatch.setattr(InterruptingMLP, "calls", 0)
    with pytest.raises(KeyboardInterrupt, match="interrupted during a; the finished runs are cached"):
        experiment.run_all(recipes, lab="lab", profile="quick", progress=False)
    assert sorted(p.name.split("-")[0] for p in (runs / "lab" / "checkpoints").iterdir()) == ["a"]  # b never began
    monkeypatch.setattr(InterruptingMLP, "interrupt_at", None)
    done = experiment.run_all(recipes, lab="lab", profile="quick", progress=False)
    assert done["a"].history.resumed_from == 1 and not done["b"].loaded
