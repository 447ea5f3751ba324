"""metrics.json, figures and the run report."""

from __future__ import annotations

import json
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from labutils import results  # noqa: E402
from labutils.data import DatasetInfo  # noqa: E402


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("LABS_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


def _info(synthetic: bool) -> DatasetInfo:
    return DatasetInfo(
        "cifar10-synthetic" if synthetic else "mnist",
        "cifar10" if synthetic else "mnist",
        "X",
        "somewhere",
        synthetic,
        10,
        tuple("abcdefghij"),
        (3, 32, 32),
        (0.5,),
        (0.25,),
        {"train": 5},
    )


def test_metrics_json_holds_provenance_versions_time_and_numbers(runs):
    res = results.LabResults("07_demo", profile="quick", seed=3, params={"epochs": 2})
    res.dataset(_info(synthetic=True))
    res["accuracy"] = np.float32(0.875)
    res["curve"] = np.array([1.0, 0.5])
    res["broken"] = float("nan")
    res.table("sweep", [{"depth": 2, "acc": 0.9}, {"depth": 8, "acc": 0.95}], caption="Depth sweep")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    png = res.figure(fig, "loss_curve", caption="Loss")
    path = res.save()
    m = json.loads(path.read_text())
    assert path == runs / "07_demo" / "metrics.json" and png.exists() and png.stat().st_size > 1000
    assert m["notebook"] == "07_demo" and m["profile"] == "quick" and m["seed"] == 3
    assert m["params"] == {"epochs": 2} and m["synthetic_data"] is True
    assert m["datasets"]["cifar10-synthetic"]["synthetic"] is True
    assert m["versions"]["numpy"] == np.__version__ and m["versions"]["python"]
    assert m["wall_time_s"] >= 0
    assert m["metrics"] == {"accuracy": 0.875, "curve": [1.0, 0.5], "broken": None}
    assert m["tables"]["sweep"]["rows"][1] == {"depth": 8, "acc": 0.95}
    assert m["figures"] == [{"file": "loss_curve.png", "caption": "Loss"}]


def test_report_has_a_section_per_notebook_with_tables_figures_and_provenance(runs):
    for stem, synthetic in (("01_a", False), ("02_b", True)):
        res = results.LabResults(stem, profile="quick", seed=0)
        res.dataset(_info(synthetic))
        res["top1"] = 0.5
        res.table("rows", [{"k": 1, "v": 2.0}])
        fig = plt.figure()
        res.figure(fig, "pic")
        res.save()
    report = results.build_report(failures={"03_c": "cell 4: ValueError: bad"}).read_text()
    assert report.index("## 01_a") < report.index("## 02_b")
    assert "![pic](01_a/pic.png)" in report and "| k | v |" in report
    assert "synthetic stand-in, not the real dataset" in report.split("## 02_b")[1]
    assert "synthetic stand-in" not in report.split("## 01_a")[1].split("## 02_b")[0]
    assert "`03_c`: cell 4: ValueError: bad" in report


def test_bad_inputs_are_refused_clearly(runs):
    with pytest.raises(ValueError, match="Unknown profile"):
        results.LabResults("01_x", profile="medium", seed=0)
    with pytest.raises(ValueError, match="plain file name"):
        results.LabResults("../escape", profile="quick", seed=0)
    res = results.LabResults("01_x", profile="quick", seed=0)
    with pytest.raises(TypeError, match="Cannot store a object"):
        res["thing"] = object()
    with pytest.raises(ValueError, match="non-empty list of dicts"):
        res.table("empty", [])
    with pytest.raises(ValueError, match="name"):
        res.dataset({"source": "x"})
    with pytest.raises(FileNotFoundError, match="python -m labutils run 99_none"):
        results.load_metrics("99_none")


def test_to_jsonable_handles_scalars_tensors_and_non_finite():
    import torch

    out = results.to_jsonable({"a": np.int64(3), "b": torch.tensor([1.5, math.inf]), "c": (1, 2)})
    assert out == {"a": 3, "b": [1.5, None], "c": [1, 2]}


def test_markdown_table_unions_columns_in_order():
    text = results.markdown_table([{"a": 1}, {"b": 0.123456, "a": 2}])
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 1 |  |", "| 2 | 0.1235 |"]


def test_references_are_saved_compared_and_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("LABS_RUNS", str(tmp_path))
    from labutils.results import LabResults, build_report, load_metrics

    res = LabResults("99_refs", profile="quick", seed=0)
    res["accuracy_by_depth"] = {"plain": {"32": 0.25}}
    res.reference("accuracy_by_depth.plain.32", 0.1135, "plain MLP, depth 32", source="students of this lab")
    res.reference("missing", (0.35, 0.45), "linear probe", source="DLA lab 1")
    table = res.compare()
    assert list(table["reference"]) == [0.1135, [0.35, 0.45]]
    measured = list(table["this run (quick)"])
    assert measured[0] == 0.25 and (measured[1] is None or math.isnan(measured[1]))
    res.save()
    assert load_metrics("99_refs")["references"][0]["source"] == "students of this lab"
    report = build_report().read_text()
    assert "References beside this run, profile `quick`" in report and "| plain MLP, depth 32 | 0.1135 |" in report
    with pytest.raises(ValueError, match="must be a number or a"):
        res.reference("x", "high", "y", source="z")


def test_profile_banner_says_profile_time_and_how_to_switch(tmp_path, monkeypatch):
    from labutils import results

    monkeypatch.setenv("LABS_RUNS", str(tmp_path))
    table = tmp_path / "timings.json"
    table.write_text(json.dumps({"04_x": {"quick": {"cpu": 42.0}, "full": {"cpu": 468.0}}}))
    monkeypatch.setattr(results, "TIMINGS_FILE", table)
    banner = results.profile_banner("04_x", "quick", device="cpu")
    assert banner.startswith("Profile 'quick' (a smoke run:") and "about 42 s on cpu (measured on the course" in banner
    assert banner.endswith("set PROFILE = 'full' in the parameters cell, or run `make labs PROFILE=full`.")
    assert "about 8 min on cpu" in results.profile_banner("04_x", "full", device="cpu")
    assert "no timing recorded on cuda yet" in results.profile_banner("04_x", "full", device="cuda")
    # this machine's own last run of the same profile and device wins over the table
    lab = results.LabResults("04_x", profile="quick", seed=0)
    lab.save()
    mine = results.profile_banner("04_x", "quick", device="cpu")
    assert "(your last run)" in mine and "about 0 s" in mine
    assert "measured on the course" in results.profile_banner("04_x", "full", device="cpu")
