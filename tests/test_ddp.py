"""Training under torchrun: DistributedDataParallel with 2 Gloo processes on the CPU.

- The shards of the training data never overlap, cover every sample, and change order every epoch (and only
  because of ``set_epoch``).
- ``fit`` in 2 processes: the weights are equal in both, and equal (to float tolerance) to one process trained
  on the same global batches; the history holds the whole run's numbers; only process 0 writes files, logs to the
  tracker and draws progress bars.
- A launch killed with SIGKILL after its first checkpoint and launched again ends with the very weights of an
  uninterrupted launch.
- ``python -m labutils train RECIPE.json --nproc 2`` trains and tests a recipe, cached apart from one process's run.

The 2-process runs are real ``torchrun --standalone`` launches; this file is also the script each process of the
``fit`` launches runs (``python -m torch.distributed.run ... tests/test_ddp.py OUT``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from labutils import distributed
from labutils.experiment import Recipe, recipe_key
from labutils.models import MLP
from labutils.train import fit

REPO = Path(__file__).resolve().parents[1]
WORLD, GLOBAL_BATCH, EPOCHS, SAMPLES = 2, 32, 3, 256
LAUNCH_TIMEOUT_S = 180


# ---- The data, model and training of the fit test (shared by the test and the processes it launches) -------------
def blobs(n: int, seed: int) -> TensorDataset:
    """``n`` points in 20 dimensions around 4 fixed class centres: (n, 20) float32 features, (n,) int64 labels."""
    centres = 2.0 * torch.randn(4, 20, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(4, (n,), generator=g)
    return TensorDataset(centres[y] + torch.randn(n, 20, generator=g), y)


def small_mlp() -> MLP:
    """No batch norm, no dropout: nothing in the model depends on how a batch is split over processes."""
    torch.manual_seed(0)
    return MLP(in_features=20, num_classes=4, width=16, depth=2)


def train_loader(batch_sampler=None) -> DataLoader:
    data = blobs(SAMPLES, seed=1)
    if batch_sampler is not None:
        return DataLoader(data, batch_sampler=batch_sampler)
    return DataLoader(data, batch_size=GLOBAL_BATCH, shuffle=True, generator=torch.Generator().manual_seed(7))


def val_loader() -> DataLoader:
    return DataLoader(blobs(64, seed=2), batch_size=64)


def fit_small(model, loader, **options):
    return fit(model, loader, val_loader(), epochs=EPOCHS, optimizer="sgd", lr=0.1, device="cpu", **options)


class RecordingTracker:
    """Stands in for labutils.tracking.Tracker: counts what fit sends it. With ``pause_after_epoch``, its log of
    that epoch (which comes after last.pt is written) waits a minute: a window in which to kill the launch."""

    def __init__(self, pause_after_epoch: int | None = None):
        self.calls, self.pause_after_epoch = 0, pause_after_epoch

    def log(self, metrics, step=None):
        self.calls += 1
        if metrics["epoch"] == self.pause_after_epoch:
            time.sleep(60)

    def summary(self, **values):
        self.calls += 1

    def log_artifact(self, path, name=None, type=None):
        self.calls += 1


def fit_in_this_process(out: Path, pause_after_epoch: int | None = None) -> None:
    """What each process of a torchrun launch runs: ``fit`` with checkpoints (resumed from ``out`` when there are
    some), a tracker and progress bars, noting every file this process writes (``os.replace``, the last step of
    every atomic write) and every bar it draws."""
    import tqdm.auto

    written, bars = [], []
    real_replace, real_tqdm = os.replace, tqdm.auto.tqdm

    def replace(src, dst, **kw):
        written.append(Path(dst).name)
        return real_replace(src, dst, **kw)

    def tqdm_bar(*args, **kw):
        bars.append(kw.get("desc"))
        return real_tqdm(*args, **kw)

    os.replace, tqdm.auto.tqdm = replace, tqdm_bar
    tracker = RecordingTracker(pause_after_epoch)
    model = small_mlp()
    history = fit_small(model, train_loader(), checkpoint_dir=out / "checkpoints", tracker=tracker, progress=True)
    os.replace, tqdm.auto.tqdm = real_replace, real_tqdm
    result = {"state": model.state_dict(), "history": history.as_dict(), "written": written, "bars": bars}
    result.update(
        tracker_calls=tracker.calls, world_size=distributed.world_size(), backend=torch.distributed.get_backend()
    )
    torch.save(result, out / f"rank{distributed.rank()}.pt")


# ---- Launching -------------------------------------------------------------------------------------------------------
def child_env(runs: Path) -> dict[str, str]:
    quiet = {"OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "LABS_DEVICE": "cpu"}
    return {**os.environ, "LABS_RUNS": str(runs), **quiet}


def launch(command: list[str], runs: Path) -> subprocess.CompletedProcess:
    """Run ``command`` to its end (all its processes killed if it overruns); fails the test on a non-zero exit."""
    process = subprocess.Popen(
        command, cwd=REPO, env=child_env(runs), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = process.communicate(timeout=LAUNCH_TIMEOUT_S)
    finally:
        kill_tree(process)  # nothing is left when it ended; everything it started when it overran
    assert process.returncode == 0, f"{' '.join(command)} failed:\n{out[-3000:]}\n{err[-3000:]}"
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL the launch, if still running, and every process it started (torchrun starts its processes in sessions
    of their own, so killing the launch alone would leave them training)."""
    if process.poll() is not None:  # ended: torchrun waited for its processes
        return
    parent = psutil.Process(process.pid)
    for p in [parent, *parent.children(recursive=True)]:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    process.wait(timeout=30)


def fit_command(out: Path, *options: str) -> list[str]:
    """torchrun starting 2 processes of this file's :func:`fit_in_this_process`."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        __file__,
        str(out),
        *options,
    ]


def read_ranks(out: Path) -> dict:
    return {r: torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)} | {"dir": out}


@pytest.fixture(scope="module")
def two_process_fit(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("ddp-fit")
    launch(fit_command(out), out)
    return read_ranks(out)


class GlobalBatches:
    """Batch sampler of one process taking, at every step, the union of the batches the 2 processes take
    (what DistributedDataParallel's averaged gradient is the gradient of)."""

    def __init__(self, loader: DataLoader):
        self.shards = [distributed.shard_loader(loader, r, WORLD) for r in range(WORLD)]
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.shards[0])

    def __iter__(self):
        self.epoch += 1  # fit's epochs count from 1, as its set_epoch calls do
        per_process = []
        for shard in self.shards:
            shard.sampler.set_epoch(self.epoch)
            per_process.append(list(shard.batch_sampler))
        for batches in zip(*per_process):
            yield [i for batch in batches for i in batch]


def max_difference(a: dict, b: dict) -> float:
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


# ---- The shards ------------------------------------------------------------------------------------------------------
def shard_order(loader: DataLoader) -> list[int]:
    return [int(i) for x, _ in loader for i in x]


def test_shards_do_not_overlap_cover_everything_and_reshuffle_every_epoch():
    n = 101  # not divisible by 2: one sample is dealt twice so that both processes take the same number of steps
    loader = DataLoader(TensorDataset(torch.arange(n), torch.zeros(n)), batch_size=20, shuffle=True)
    shards = [distributed.shard_loader(loader, r, WORLD) for r in range(WORLD)]
    assert [s.batch_size for s in shards] == [10, 10]  # the global batch of 20, split in two
    orders = {}
    for epoch in (1, 2):
        for r, shard in enumerate(shards):
            shard.sampler.set_epoch(epoch)
            orders[epoch, r] = shard_order(shard)
        first, second = orders[epoch, 0], orders[epoch, 1]
        assert len(first) == len(second) == 51
        assert set(first) | set(second) == set(range(n))
        assert len(set(first) & set(second)) == 1  # the one sample dealt twice; no other overlap
    assert orders[1, 0] != orders[2, 0] and orders[1, 1] != orders[2, 1]
    # the order depends on the epoch only: a resumed run (set_epoch(2) again) draws the very same order
    shards[0].sampler.set_epoch(2)
    assert shard_order(shards[0]) == orders[2, 0]


def test_without_set_epoch_every_epoch_repeats_the_same_order():
    data = TensorDataset(torch.arange(64), torch.zeros(64))
    shard = distributed.shard_loader(DataLoader(data, batch_size=8, shuffle=True), 0, WORLD)
    assert shard_order(shard) == shard_order(shard)  # why fit calls set_epoch every epoch


def test_an_unshuffled_loader_keeps_its_order_and_a_bad_batch_size_is_one_sentence():
    data = TensorDataset(torch.arange(10), torch.zeros(10))
    shards = [distributed.shard_loader(DataLoader(data, batch_size=4), r, WORLD) for r in range(WORLD)]
    assert shard_order(shards[0]) == [0, 2, 4, 6, 8] and shard_order(shards[1]) == [1, 3, 5, 7, 9]
    with pytest.raises(ValueError, match=r"batch_size=5 is the global batch .* 2 processes: use a multiple of 2"):
        distributed.shard_loader(DataLoader(data, batch_size=5), 0, WORLD)


def test_one_process_is_left_alone_and_runs_of_several_processes_are_cached_apart(monkeypatch):
    for name in distributed.TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    loader, model = train_loader(), small_mlp()
    ddp = distributed.setup(model, loader)
    assert ddp.model is model and ddp.loader is loader and not distributed.launched()
    assert distributed.sum_across_ranks(1.5, 3) == (1.5, 3) and distributed.mean_across_ranks(0.25) == 0.25
    recipe = Recipe("r", model=MLP, model_kwargs=dict(in_features=4, num_classes=2, width=4, depth=1))
    dataset = {"name": "mnist", "source": "x", "synthetic": False}
    alone = recipe_key(recipe, dataset)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert distributed.launched() and distributed.world_size() == 2
    assert recipe_key(recipe, dataset) != alone  # 2 processes shuffle differently: never the 1-process result
    assert distributed.torchrun_command(["train", "r.json"], 2)[1:] == [
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "labutils",
        "train",
        "r.json",
    ]


# ---- fit in 2 processes ----------------------------------------------------------------------------------------------
def test_two_processes_end_with_equal_weights(two_process_fit):
    r0, r1 = two_process_fit[0], two_process_fit[1]
    assert r0["world_size"] == r1["world_size"] == 2 and r0["backend"] == "gloo"
    assert max_difference(r0["state"], r1["state"]) == 0.0  # the same averaged gradient, the same step: exactly
    for row0, row1 in zip(r0["history"]["epochs"], r1["history"]["epochs"], strict=True):  # the whole run's numbers
        assert {k: v for k, v in row0.items() if k != "time_s"} == {k: v for k, v in row1.items() if k != "time_s"}


def test_two_processes_equal_one_process_on_the_global_batches(two_process_fit):
    ddp_state, ddp_rows = two_process_fit[0]["state"], two_process_fit[0]["history"]["epochs"]
    reference = small_mlp()
    rows = fit_small(reference, train_loader(GlobalBatches(train_loader())), progress=False).as_dict()["epochs"]
    assert max_difference(ddp_state, reference.state_dict()) < 1e-5  # float32 sums in another order
    for ddp_row, row in zip(ddp_rows, rows, strict=True):
        assert ddp_row["train_loss"] == pytest.approx(row["train_loss"], rel=1e-5)
        assert abs(ddp_row["train_acc"] - row["train_acc"]) <= 1 / SAMPLES  # at most one sample on a tie
        assert abs(ddp_row["val_acc"] - row["val_acc"]) <= 1 / 64
    assert rows[-1]["val_acc"] > 0.9  # it learned: four well separated blobs
    # the tolerance above is tight: one process on the same data in another order ends far from it
    shuffled = small_mlp()
    fit_small(shuffled, train_loader(), progress=False)
    assert max_difference(ddp_state, shuffled.state_dict()) > 1e-3


def test_only_process_zero_writes_logs_and_draws(two_process_fit):
    r0, r1 = two_process_fit[0], two_process_fit[1]
    assert r1["written"] == [] and r1["tracker_calls"] == 0 and r1["bars"] == []
    assert r0["written"].count("last.pt") == EPOCHS and "best.pt" in r0["written"]
    assert r0["tracker_calls"] == EPOCHS + 2  # one log per epoch, the summary, best.pt as an artifact
    assert r0["bars"][:2] == ["epochs", "epoch 1"]
    last = torch.load(two_process_fit["dir"] / "checkpoints" / "last.pt", weights_only=True)
    assert last["epoch"] == EPOCHS and max_difference(last["model"], r0["state"]) == 0.0


# ---- Killed and launched again ---------------------------------------------------------------------------------------
def without_time(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "time_s"} for row in rows]


def test_a_launch_killed_after_its_first_checkpoint_resumes_to_the_same_weights(two_process_fit, tmp_path):
    env = child_env(tmp_path)
    process = subprocess.Popen(fit_command(tmp_path, "1"), cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    last, deadline = tmp_path / "checkpoints" / "last.pt", time.monotonic() + LAUNCH_TIMEOUT_S
    try:
        while not last.exists():
            assert process.poll() is None, "the launch ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within the time limit"
            time.sleep(0.02)
    finally:
        kill_tree(process)  # SIGKILL, as a crash or the out-of-memory killer would
    assert torch.load(last, weights_only=True)["epoch"] == 1 and not list(tmp_path.glob("rank*.pt"))

    again = launch(fit_command(tmp_path), tmp_path)
    assert again.stdout.count(f"after epoch 1 of {EPOCHS}: resuming for epochs 2-{EPOCHS}") == 1  # process 0 says so
    resumed, whole = read_ranks(tmp_path), two_process_fit
    assert resumed[0]["history"]["resumed_from"] == 1 and whole[0]["history"]["resumed_from"] is None
    for r in range(WORLD):
        assert max_difference(resumed[r]["state"], whole[r]["state"]) == 0.0  # bit for bit, in both processes
    assert without_time(resumed[0]["history"]["epochs"]) == without_time(whole[0]["history"]["epochs"])


# ---- python -m labutils train RECIPE.json --nproc 2 ------------------------------------------------------------------
RECIPE = {
    "name": "digits-mlp",
    "lab": "ddp",
    "model": "labutils.models.MLP",
    "model_kwargs": {"in_features": 784, "num_classes": 10, "width": 64, "depth": 2},
    "dataset": "digits",
    "epochs": 2,
    "batch_size": 32,
    "optimizer": "adam",
    "lr": 0.003,
    "seed": 0,
}


def test_train_command_trains_a_recipe_in_two_processes(tmp_path, monkeypatch):
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps(RECIPE))
    done = launch([sys.executable, "-m", "labutils", "train", str(recipe), "--nproc", "2", "--no-progress"], tmp_path)
    assert done.stdout.count("digits-mlp: test accuracy") == 1 and "on 2 process(es)" in done.stdout
    [folder] = (tmp_path / "ddp" / "checkpoints").iterdir()
    result = json.loads((folder / "result.json").read_text())
    assert len(result["history"]["epochs"]) == 2 and result["test"]["top1"] > 0.8  # 10 classes: chance is 0.1
    assert torch.load(folder / "model.pt", weights_only=True)["fc.weight"].shape == (10, 64)
    # cached apart from a one-process run of the same recipe, under the key of a 2-process run
    same = Recipe.from_config({k: v for k, v in RECIPE.items() if k != "lab"})
    assert folder.name != recipe_key(same, result["dataset"])
    for name, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "2")):
        monkeypatch.setenv(name, value)
    assert folder.name == recipe_key(same, result["dataset"])


def test_train_command_refuses_a_bad_recipe_in_one_sentence(tmp_path):
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({**RECIPE, "learning_rate": 0.1}))
    command = [sys.executable, "-m", "labutils", "train", str(recipe), "--nproc", "2"]
    done = subprocess.run(command, cwd=REPO, env=child_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "torch.distributed.run" not in done.stderr
    assert done.stderr.startswith("error: A recipe has no field 'learning_rate'; fields are name, model")


if __name__ == "__main__":  # one process of the torchrun launch of the fit tests
    fit_in_this_process(Path(sys.argv[1]), pause_after_epoch=int(sys.argv[2]) if len(sys.argv) > 2 else None)
    distributed.teardown()
