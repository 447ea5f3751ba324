"""The fit-overhead benchmark runs end to end: its worker processes report back and their runs are pooled.

Timing itself is the benchmark's business (see benchmarks/bench_fit_overhead.py); this only checks that the
script still works, with the smallest settings.
"""

import importlib.util
import json
from pathlib import Path

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
    printed = capsys.readouterr().out
    assert "each process alone" in printed and "medians of 2 runs (2 process(es) x 1 repeats)" in printed


def test_refuses_too_few_runs(capsys):
    bench = load_bench()
    with pytest.raises(SystemExit):
        bench.main(["--model", "mlp", "--repeats", "1", "--processes", "1"])
    assert "at least 2 runs" in capsys.readouterr().err
