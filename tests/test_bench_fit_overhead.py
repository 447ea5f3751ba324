"""The fit-overhead benchmark runs end to end: its worker processes report back and their runs are pooled.

Timing itself is the benchmark's business (see benchmarks/bench_fit_overhead.py); this only checks that the
script still works, with the smallest settings.
"""

import importlib.util
import json
import statistics
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_fit_overhead.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_fit_overhead", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_runs_in_two_processes_and_pools_them(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    bench = load_bench()
    out = tmp_path / "bench.json"
    flags = ["--model", "mlp", "--epochs", "1", "--repeats", "1", "--processes", "2", "--json", str(out)]
    results = bench.main(flags)

    row = json.loads(out.read_text())["mlp"]
    assert row == results["mlp"]  # (floats survive JSON exactly)
    assert row["processes"] == 2 and row["steps"] == 64  # 8192 samples, batch 128, one epoch
    for key in ("bare", "fit", "fit_recorder_wandb"):  # one run per configuration from each process
        assert len(row[f"{key}_cpu_runs_s"]) == 2 and all(t > 0 for t in row[f"{key}_cpu_runs_s"])
    assert len(row["overhead_cpu_by_process"]) == 2
    assert row["overhead_cpu"] == pytest.approx(row["fit_recorder_wandb_cpu_s"] / row["bare_cpu_s"] - 1)
    assert row["target_met"] == (row["overhead_cpu"] <= bench.TARGET)
    lo, hi = row["overhead_cpu_interval95"]
    assert lo <= row["overhead_cpu"] <= hi
    printed = capsys.readouterr().out
    assert "each process alone" in printed and "medians of 2 runs (2 process(es) x 1 repeats)" in printed


def processes(bare: list[list[float]], fit: list[list[float]]) -> list[dict]:
    """What the worker processes report, as far as the interval reads it."""
    return [{"cpu": {"bare": b, "fit_recorder_wandb": f}} for b, f in zip(bare, fit)]


def test_interval_of_noiseless_runs_is_the_overhead_itself():
    bench = load_bench()
    measured = processes([[1.0, 1.0, 1.0]] * 3, [[1.2, 1.2, 1.2]] * 3)
    lo, hi = bench.overhead_interval(measured, "fit_recorder_wandb")
    assert lo == pytest.approx(0.2) and hi == pytest.approx(0.2)


def test_interval_brackets_the_overhead_and_widens_with_the_noise():
    bench = load_bench()
    rng = np.random.default_rng(1)
    widths = []
    for noise in (0.01, 0.1):
        bare = (1.0 + noise * rng.standard_normal((6, 5))).tolist()
        fit = (1.05 * (1.0 + noise * rng.standard_normal((6, 5)))).tolist()
        lo, hi = bench.overhead_interval(processes(bare, fit), "fit_recorder_wandb")
        point = statistics.median(sum(fit, [])) / statistics.median(sum(bare, [])) - 1
        assert lo <= point <= hi
        widths.append(hi - lo)
    assert widths[0] < 0.03 < widths[1]  # ~10 times the noise, ~10 times the width


def test_interval_counts_a_process_that_stands_apart():
    """Runs alike within each process, but one process's ratio far from the others': the interval must
    reach it, since another invocation may draw more processes like it."""
    bench = load_bench()
    bare = [[1.0] * 4 for _ in range(6)]
    fit = [[1.02] * 4 for _ in range(5)] + [[1.30] * 4]
    lo, hi = bench.overhead_interval(processes(bare, fit), "fit_recorder_wandb")
    assert lo == pytest.approx(0.02) and hi > 0.1


def test_interval_of_one_process_redraws_its_runs():
    """One process: no process to redraw, so the interval must come from its runs, not collapse to a point."""
    bench = load_bench()
    measured = processes([[1.0, 0.9, 1.1, 1.0, 0.95, 1.05]], [[1.1, 1.0, 1.2, 1.15, 1.05, 1.1]])
    lo, hi = bench.overhead_interval(measured, "fit_recorder_wandb")
    point = statistics.median(measured[0]["cpu"]["fit_recorder_wandb"]) / statistics.median(measured[0]["cpu"]["bare"])
    assert lo < point - 1 < hi and hi - lo > 0.05


def test_verdict_reads_the_interval():
    bench = load_bench()
    assert bench._verdict(0.02, 0.08).startswith("within")
    assert bench._verdict(0.11, 0.2).startswith("over")
    assert "cannot tell" in bench._verdict(0.05, 0.15)


def test_refuses_too_few_runs(capsys):
    bench = load_bench()
    with pytest.raises(SystemExit):
        bench.main(["--model", "mlp", "--repeats", "1", "--processes", "1"])
    assert "at least 2 runs" in capsys.readouterr().err
