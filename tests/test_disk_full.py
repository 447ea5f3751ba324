"""A full disk while saving: one sentence naming the file, and the previous file kept whole.

Where the tests run as root and may mount, a real 1 MiB tmpfs is filled; everywhere, the operating system's
ENOSPC is also simulated at the file write.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn

from labutils import util
from labutils.checkpoints import atomic_save
from labutils.train import fit
from labutils.util import DiskFullError


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str = "1m"):
    folder.mkdir()
    mounted = (
        os.geteuid() == 0
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True
        ).returncode
        == 0
    )
    if not mounted:
        pytest.skip("mounting a tmpfs needs root and the mount capability")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> None:
    """Write zeros until the file system is full (keeping what is there)."""
    with open(folder / "filler", "wb") as fh, contextlib.suppress(OSError):
        while True:
            fh.write(bytes(64 * 1024))
            fh.flush()


def no_space_message(path: Path) -> str:
    return f"No space left to write {path}: free some space and run again (the previous file is kept)."


def test_a_full_tmpfs_keeps_the_previous_checkpoint(tmp_path):
    with small_tmpfs(tmp_path / "small") as disk:
        path = disk / "last.pt"
        first = {"w": torch.arange(1000.0)}
        atomic_save(first, path)
        fill(disk)
        with pytest.raises(DiskFullError) as err:
            atomic_save({"w": torch.zeros(200_000)}, path)
        assert str(err.value) == no_space_message(path)
        assert torch.equal(torch.load(path, weights_only=True)["w"], first["w"])
        assert sorted(p.name for p in disk.iterdir()) == ["filler", "last.pt"]  # no temporary left behind


class _FullFile:
    """A file whose writes fail as on a full disk."""

    def __init__(self, fh):
        self.fh = fh

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()


def test_enospc_while_fit_saves_is_one_sentence_and_the_previous_epoch_survives(tmp_path, monkeypatch):
    torch.manual_seed(0)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    fit(model, loader, loader, epochs=1, checkpoint_dir=tmp_path, progress=False, device="cpu")
    saved_after_one = (tmp_path / "last.pt").read_bytes()

    real_fdopen = os.fdopen
    monkeypatch.setattr(util.os, "fdopen", lambda fd, mode="r": _FullFile(real_fdopen(fd, mode)))
    with pytest.raises(DiskFullError) as err:
        fit(model, loader, loader, epochs=2, checkpoint_dir=tmp_path, progress=False, device="cpu")
    message = str(err.value)
    assert message in (no_space_message(tmp_path / "best.pt"), no_space_message(tmp_path / "last.pt"))
    monkeypatch.undo()
    assert (tmp_path / "last.pt").read_bytes() == saved_after_one
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    history = fit(model, loader, loader, epochs=2, checkpoint_dir=tmp_path, progress=False, device="cpu")
    assert history.resumed_from == 1 and len(history) == 2  # with space again, the rerun resumes the saved epoch


def test_other_write_errors_are_not_called_a_full_disk(tmp_path, monkeypatch):
    class BrokenFile(_FullFile):
        def write(self, data):
            raise OSError(errno.EIO, "Input/output error")

    real_fdopen = os.fdopen
    monkeypatch.setattr(util.os, "fdopen", lambda fd, mode="r": BrokenFile(real_fdopen(fd, mode)))
    with pytest.raises(OSError) as err:
        atomic_save({"w": torch.zeros(3)}, tmp_path / "x.pt")
    assert not isinstance(err.value, DiskFullError) and err.value.errno == errno.EIO
