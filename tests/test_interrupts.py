"""Ctrl-C while the labs run: one line, exit status 130, nothing that finished is lost, nothing more is started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from test_cli import _notebook, _without_progress


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
    # A terminal's Ctrl-C signals the whole foreground process group: the command and the kernel it started.
    proc = subprocess.Popen(command, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not started.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert started.exists(), "the notebook's cell never started"
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 130, err
    lines = _without_progress(err)
    assert lines == ["interrupted in 95_slow, cell 3; finished runs are cached"]  # after papermill's injected cell, err
    assert "Traceback" not in out + err
    assert not (runs / "96_after").exists()  # the run stops: the next notebook is not started
    assert (runs / "REPORT.md").exists()  # and what did finish is still reported
