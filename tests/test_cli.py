"""``python -m labutils``: run (with failure reporting), data, strip, record."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from labutils import nbtools
from labutils.__main__ import main

REPO = Path(__file__).resolve().parents[1]


def _notebook(path: Path, body: str, checked: str | None = None) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell("import os\nPROFILE = os.environ.get('LABS_PROFILE', 'full')\nSEED = 0\nN = 3")
    params.metadata["tags"] = ["parameters"]
    cells = [params, nbformat.v4.new_code_cell(body)]
    if checked:
        cells.append(nbformat.v4.new_code_cell(checked))
    nb.cells = cells
    nbformat.write(nb, str(path))
    return path


GOOD = """
from labutils.results import LabResults
res = LabResults(STEM, profile=PROFILE, seed=SEED, params={"n": N})
res["n_squared"] = N * N
res.save()
"""


def test_run_executes_notebooks_with_parameters_and_writes_the_report(tmp_path):
    good = _notebook(tmp_path / "91_good.ipynb", "STEM = '91_good'\n" + GOOD)
    bad = _notebook(tmp_path / "92_bad.ipynb", "x = 1\n\nraise ValueError('depth must be >= 1, got 0')")
    runs = tmp_path / "runs"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "labutils",
            "run",
            str(good),
            str(bad),
            "--profile",
            "quick",
            "-p",
            "N",
            "5",
            "--runs",
            str(runs),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    metrics = json.loads((runs / "91_good" / "metrics.json").read_text())
    assert metrics["profile"] == "quick" and metrics["metrics"]["n_squared"] == 25
    assert (runs / "91_good" / "91_good.ipynb").exists()
    assert "92_bad" in proc.stdout and "ValueError: depth must be >= 1, got 0" in proc.stdout
    assert "cell" in proc.stdout.split("92_bad")[-1]
    assert (proc.stdout + proc.stderr).count("depth must be >= 1") == 1  # the failure is printed once
    assert _without_progress(proc.stderr) == [
        f"1 notebook(s) failed: 92_bad. The executed copies under {runs}/ show the failing cell."
    ]
    report = (runs / "REPORT.md").read_text()
    assert "## 91_good" in report and "`92_bad`: cell" in report


def test_the_kernels_own_stderr_goes_to_its_log_not_the_console(tmp_path):
    # what a kernel writes to its process's stderr (ipykernel's messages about itself, such as a traceback when its
    # sockets close during shutdown), not to a cell's output
    noisy = _notebook(
        tmp_path / "93_noisy.ipynb",
        "import sys, os\nsys.__stderr__.write('kernel says A\\n')\nsys.__stderr__.flush()\n"
        "os.write(2, b'kernel says B\\n')",
    )
    quiet = _notebook(tmp_path / "94_quiet.ipynb", "x = 1")
    runs = tmp_path / "runs"
    command = [sys.executable, "-m", "labutils", "run", str(noisy), str(quiet), "--profile", "quick"]
    proc = subprocess.run([*command, "--runs", str(runs)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "kernel says" not in proc.stdout + proc.stderr and _without_progress(proc.stderr) == []
    assert (runs / "93_noisy" / "kernel.log").read_text().splitlines() == ["kernel says A", "kernel says B"]
    assert not (runs / "94_quiet" / "kernel.log").exists()  # an empty log is not left behind
    assert (runs / "94_quiet" / "94_quiet.ipynb").exists()


def test_unknown_notebook_and_profile_give_one_line(capsys):
    assert main(["run", "99_nothing"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: No single notebook matches '99_nothing'") and err.count("\n") == 1
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--profile", "medium"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'medium'" in capsys.readouterr().err


def test_data_command_reports_every_dataset(capsys, monkeypatch):
    from labutils import datasets

    monkeypatch.setattr(datasets, "network_reachable", lambda *a, **k: False)
    assert main(["data", "mnist", "cifar10"]) == 0
    out = capsys.readouterr().out
    assert "mnist       ok" in out and "cifar10     missing" in out and "cifar-10-python.tar.gz" in out
    assert main(["data", "imagenet"]) == 2


def test_strip_keeps_only_checked_outputs(tmp_path):
    path = _notebook(tmp_path / "93_x.ipynb", "print(1)", checked="# NBVAL_CHECK_OUTPUT\nprint(2)")
    nb = json.loads(path.read_text())
    stream = {"output_type": "stream", "name": "stdout", "text": ["1\n"]}
    for cell in nb["cells"][1:]:
        cell["outputs"], cell["execution_count"] = [dict(stream)], 4
    nb["cells"][1]["metadata"]["execution"] = {"iopub.status.busy": "2026-01-01"}
    path.write_text(json.dumps(nb))
    assert nbtools.stored_output_problems(nb) == [1]
    assert nbtools.strip_file(path, check=True) is True
    assert nbtools.strip_file(path) is True
    cleaned = json.loads(path.read_text())
    assert cleaned["cells"][1]["outputs"] == [] and cleaned["cells"][1]["execution_count"] is None
    assert cleaned["cells"][2]["outputs"] == [stream] and "execution" not in cleaned["cells"][1]["metadata"]
    assert cleaned["cells"][2]["execution_count"] == 1  # nbval compares only cells with a count
    assert nbtools.strip_file(path, check=True) is False


def test_record_stores_the_output_of_checked_cells(tmp_path):
    path = _notebook(tmp_path / "94_rec.ipynb", "y = N + 1", checked="# NBVAL_CHECK_OUTPUT\nprint('y =', y)")
    [run] = nbtools.run_notebooks([path], "quick", runs=tmp_path / "runs", progress=False)
    assert run.ok, run.error
    assert nbtools.record_checked_outputs(path, run.output) == 1
    cells = json.loads(path.read_text())["cells"]
    assert cells[2]["outputs"][0]["text"] == ["y = 4\n"] and cells[1]["outputs"] == []


@pytest.mark.parametrize("text, value", [("3", 3), ("0.5", 0.5), ("[2, 8]", [2, 8]), ("None", None), ("adam", "adam")])
def test_parameter_values_parse_as_literals_or_strings(text, value):
    assert nbtools.parse_value(text) == value


def test_nbval_fails_when_a_checked_output_changes(tmp_path):
    """The regression cells are real checks: a stored output that no longer matches fails the suite."""
    path = _notebook(tmp_path / "95_check.ipynb", "y = N * 2", checked="# NBVAL_CHECK_OUTPUT\nprint('y =', y)")
    [run] = nbtools.run_notebooks([path], "quick", runs=tmp_path / "runs", progress=False)
    nbtools.record_checked_outputs(path, run.output)
    ok = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert ok.returncode == 0, ok.stdout[-2000:]
    nb = json.loads(path.read_text())
    nb["cells"][2]["outputs"][0]["text"] = ["y = 7\n"]
    path.write_text(json.dumps(nb))
    changed = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert changed.returncode == 1 and "y = 7" in changed.stdout


def _without_progress(stderr: str) -> list[str]:
    """stderr's lines without the progress bar's (tqdm redraws with carriage returns)."""
    lines = [line.strip() for line in stderr.replace("\r", "\n").splitlines()]
    return [line for line in lines if line and "cell/s" not in line and "s/cell" not in line and "cell [" not in line]


def test_a_successful_run_prints_only_progress_and_summary(tmp_path):
    """No kernel chatter (unencrypted-TCP warning, KeyboardInterrupt at shutdown) when every notebook succeeds."""
    body = "from tqdm.auto import tqdm\nfor i in tqdm(range(N), desc='epochs'):\n    pass\nprint('inside')"
    paths = [_notebook(tmp_path / f"9{k}_quiet.ipynb", body) for k in range(2)]
    runs = tmp_path / "runs"
    proc = subprocess.run(
        [sys.executable, "-m", "labutils", "run", *map(str, paths), "--runs", str(runs)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert _without_progress(proc.stderr) == [], proc.stderr
    assert proc.stdout.splitlines()[0] == f"Running 2 notebook(s) in the 'quick' profile into {runs}/"
    assert [line.split()[:2] for line in proc.stdout.splitlines()[1:3]] == [["ok", "90_quiet"], ["ok", "91_quiet"]]
    assert proc.stdout.splitlines()[3:] == [f"Report: {runs / 'REPORT.md'}"]


# -- parameters are checked before anything runs ------------------------------------------------------
KNOBS = """
import labutils
P = labutils.knobs(PROFILE, globals(), quick=dict(DEPTHS=[2, 4], EPOCHS=1), full=dict(DEPTHS=[2, 8, 16], EPOCHS=5))
"""


def _knobs_notebook(path: Path, second: str = KNOBS) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell(
        "import os\n\nPROFILE = os.environ.get('LABS_PROFILE', 'full')\nSEED = 0\n"
        "DEPTHS = None  # quick/full below\nEPOCHS = None\nWIDTH = 16\nLR = 0.1\nCHANNELS = (8, 16)\n"
        "INIT = 'pytorch'\nFREE = None  # no profile defaults: anything goes"
    )
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# A lab"), params, nbformat.v4.new_code_cell(second)]
    nbformat.write(nb, str(path))
    return path


def test_parameters_cell_and_profile_defaults_are_read_without_running(tmp_path):
    got = nbtools.notebook_parameters(_knobs_notebook(tmp_path / "81_knobs.ipynb"))
    assert got.defaults == {
        "PROFILE": [],  # not a literal: anything (the profile itself is --profile's business)
        "SEED": [0],
        "DEPTHS": [[2, 4], [2, 8, 16]],
        "EPOCHS": [1, 5],
        "WIDTH": [16],
        "LR": [0.1],
        "CHANNELS": [(8, 16)],
        "INIT": ["pytorch"],
        "FREE": [],
    }
    assert got.none_ok == {"DEPTHS", "EPOCHS", "FREE"}
    older = "import labutils\nDEPTHS = DEPTHS if DEPTHS is not None else labutils.pick(PROFILE, quick=[2], full=[2, 8])"
    legacy = nbtools.notebook_parameters(_knobs_notebook(tmp_path / "82_pick.ipynb", older))
    assert legacy.defaults["DEPTHS"] == [[2], [2, 8]] and legacy.defaults["EPOCHS"] == []


@pytest.mark.parametrize(
    "name, text",
    [
        ("DEPTHS", "[3, 5]"),
        ("DEPTHS", "None"),
        ("EPOCHS", "3"),
        ("LR", "1"),
        ("CHANNELS", "[4, 8]"),
        ("INIT", "kaiming"),
        ("FREE", "anything"),
        ("FREE", "[1, 'a']"),
        ("SEED", "7"),
    ],
)
def test_fitting_values_are_accepted(tmp_path, name, text):
    path = _knobs_notebook(tmp_path / "83_ok.ipynb")
    value = nbtools.parse_value(text)
    assert nbtools.check_parameters([path], {name: value}) == {path: {name: value}}


@pytest.mark.parametrize(
    "name, text, message",
    [
        (
            "DEPTHS",
            "notalist",
            "Parameter DEPTHS='notalist' is a string, but DEPTHS takes a list such as [2, 4] (84_bad).",
        ),
        ("EPOCHS", "2.5", "Parameter EPOCHS=2.5 is a number, but EPOCHS takes an integer such as 1 (84_bad)."),
        ("WIDTH", "[16]", "Parameter WIDTH=[16] is a list, but WIDTH takes an integer such as 16 (84_bad)."),
        ("CHANNELS", "[4, 'a']", "Parameter CHANNELS=[4, 'a'] is a list, but CHANNELS takes a list such as (8, 16)"),
        ("SEED", "None", "Parameter SEED=None is None, but SEED takes an integer such as 0 (84_bad)."),
        ("NOSUCHPARAM", "1", "Unknown parameter NOSUCHPARAM=1 for 84_bad: the parameters are SEED, DEPTHS, EPOCHS,"),
        ("DEPTH", "[2]", "Unknown parameter DEPTH=[2] for 84_bad (did you mean DEPTHS?): the parameters are SEED,"),
        ("width", "8", "Unknown parameter width=8 for 84_bad (did you mean WIDTH?)"),
        ("PROFILE", "full", "Choose the profile with --profile quick|full, not -p PROFILE 'full'."),
    ],
)
def test_mistaken_parameters_stop_the_run_before_any_kernel_starts(tmp_path, capsys, name, text, message):
    path = _knobs_notebook(tmp_path / "84_bad.ipynb")
    runs = tmp_path / "runs"
    assert main(["run", str(path), "-p", name, text, "--runs", str(runs)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: " + message) and captured.err.count("\n") == 1
    assert captured.out == "" and not runs.exists()


def test_a_parameter_goes_to_the_notebooks_that_take_it(tmp_path):
    knobs = _knobs_notebook(tmp_path / "85_knobs.ipynb")
    plain = _notebook(tmp_path / "86_plain.ipynb", "pass")
    assert nbtools.check_parameters([knobs, plain], {"N": 4, "WIDTH": 8}) == {knobs: {"WIDTH": 8}, plain: {"N": 4}}
    expected = r"^Unknown parameter EPOCH=4 for any of the 2 notebooks \(did you mean EPOCHS\?\)"
    with pytest.raises(ValueError, match=expected):
        nbtools.check_parameters([knobs, plain], {"EPOCH": 4})


# -- progress inside a notebook -------------------------------------------------------------------------
FAKE_TQDM = (
    "import sys, time\n"
    "sys.stderr.write('epochs:  25%|##5       | 3/12 [00:10<00:30,  3.00s/ep]\\r')\n"
    "sys.stderr.flush()\n"
    "time.sleep(0.5)"
)
WIDGET_TQDM = "from tqdm.auto import tqdm\nimport time\nfor i in tqdm(range(N), desc='epochs'):\n    time.sleep(0.3)"


def test_progress_names_the_cell_and_the_running_training_epoch(tmp_path, monkeypatch):
    """Text tqdm on stderr and tqdm's notebook widget (what the labs show) both reach the progress line."""
    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)  # (conftest slows bars for nbval) it watches one move
    path = _notebook(tmp_path / "87_progress.ipynb", FAKE_TQDM, checked=WIDGET_TQDM)
    seen: list[str] = []
    [run] = nbtools.run_notebooks(
        [path], "quick", runs=tmp_path / "runs", progress=False, on_progress=lambda p: seen.append(p.describe())
    )
    assert run.ok, run.error
    # 4 code cells: papermill's injected parameters, the parameters cell, the fake bar, the widget bar
    assert seen[0] == "cell 1 of 4" and "cell 2 of 4" in seen
    assert "cell 3 of 4, epochs 3/12" in seen
    assert {"cell 4 of 4, epochs 1/3", "cell 4 of 4, epochs 2/3"} <= set(seen)
    assert seen[-1] == "cell 4 of 4"  # a finished bar is dropped


def _msg(kind: str, **content) -> dict:
    return {"msg_type": kind, "content": content}


def test_progress_reads_text_and_widget_bars():
    p = nbtools.NotebookProgress("x")
    p.cell_started({}, 1, [{"cell_type": "markdown"}, {"cell_type": "code"}, {"cell_type": "code"}])
    assert p.describe() == "cell 1 of 2"
    p.message(_msg("stream", name="stderr", text="\rdepth sweep:  50%|#####     | 2/4 [00:01<00:01]\rwarming up\n"))
    p.message(_msg("stream", name="stdout", text="epochs:  50%|#####     | 1/2 [00:01<00:01]"))  # not a bar's stream
    assert p.describe() == "cell 1 of 2, depth sweep 2/4"
    html = {"_model_name": "HTMLModel", "value": ""}
    for comm, state in [("l", html), ("b", {"_model_name": "FloatProgressModel", "value": 0.0}), ("r", html)]:
        p.message(_msg("comm_open", comm_id=comm, data={"state": state}))
    p.message(
        _msg(
            "comm_open",
            comm_id="box",
            data={"state": {"_model_name": "HBoxModel", "children": ["IPY_MODEL_l", "IPY_MODEL_b", "IPY_MODEL_r"]}},
        )
    )
    p.message(_msg("comm_msg", comm_id="l", data={"state": {"value": "epoch\u20073:\u2007\u200725%"}}))
    p.message(_msg("comm_msg", comm_id="r", data={"state": {"value": "\u200749/196\u2007[00:02&lt;00:06]"}}))
    assert p.describe() == "cell 1 of 2, depth sweep 2/4, epoch 3 49/196"
    p.message(_msg("comm_msg", comm_id="b", data={"state": {"bar_style": "danger"}}))  # closed early
    assert p.describe() == "cell 1 of 2, depth sweep 2/4"
    p.cell_started({}, 2, [{"cell_type": "markdown"}, {"cell_type": "code"}, {"cell_type": "code"}])
    assert p.describe() == "cell 2 of 2"
