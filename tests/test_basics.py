"""Profiles, seeding, device choice and wandb mode resolution."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import labutils
from labutils import tracking


def test_profiles_and_pick():
    assert labutils.check_profile("quick") == "quick"
    assert labutils.pick("quick", quick=1, full=20) == 1 and labutils.pick("full", quick=1, full=20) == 20
    with pytest.raises(ValueError, match=r"Unknown profile 'Full': choose one of quick, full"):
        labutils.pick("Full", quick=1, full=2)


def test_default_profile_reads_the_environment(monkeypatch):
    monkeypatch.setenv("LABS_PROFILE", "quick")
    assert labutils.default_profile() == "quick"
    monkeypatch.delenv("LABS_PROFILE")
    assert labutils.default_profile() == "full"
    monkeypatch.setenv("LABS_PROFILE", "tiny")
    with pytest.raises(ValueError, match="tiny"):
        labutils.default_profile()


def test_seed_everything_makes_numpy_and_torch_repeat():
    labutils.seed_everything(7)
    a = (np.random.rand(3), torch.rand(3))
    labutils.seed_everything(7)
    b = (np.random.rand(3), torch.rand(3))
    np.testing.assert_array_equal(a[0], b[0])
    assert torch.equal(a[1], b[1])


def test_device_choice(monkeypatch):
    monkeypatch.delenv("LABS_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert labutils.get_device().type == expected
    assert labutils.get_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match=r"Unknown device 'tpu'"):
        labutils.get_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="not available"):
            labutils.get_device("cuda")


@pytest.mark.parametrize(
    "env, expected", [("offline", "offline"), ("disabled", "disabled"), ("online", "online"), ("dryrun", "offline")]
)
def test_wandb_mode_is_honoured(monkeypatch, env, expected):
    monkeypatch.setenv("WANDB_MODE", env)
    assert tracking.resolve_mode() == expected


def test_wandb_defaults_to_offline_without_credentials(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    assert tracking.resolve_mode() == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert tracking.resolve_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "sometimes")
    with pytest.raises(ValueError, match="sometimes"):
        tracking.resolve_mode()


def test_offline_tracker_writes_a_local_run_without_prompting(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    tracker = tracking.Tracker(name="unit", config={"depth": 2}, dir=tmp_path)
    assert tracker.mode == "offline" and tracker.enabled
    tracker.log({"loss": 1.0}, step=0)
    tracker.summary(best=0.5)
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"weights")
    tracker.log_artifact(ckpt, name="best-model")
    tracker.finish()
    assert not tracker.enabled
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_disabled_tracker_is_a_no_op(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    with tracking.Tracker(name="off", dir=tmp_path) as tracker:
        tracker.log({"x": 1})
        assert not tracker.enabled
    assert not (tmp_path / "wandb").exists()
