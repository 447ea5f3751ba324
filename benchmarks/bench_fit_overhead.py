"""How much does ``labutils.train.fit`` with everything on cost over a bare PyTorch training loop?

Both train the same MLP (784-256-256-10, same initial weights) on the same random MNIST-sized tensors in the
same batch order for ``EPOCHS`` epochs with SGD, and validate after every epoch. ``fit`` runs with what a lab
turns on: a GradientRecorder recording every step, an offline wandb Tracker writing into a temporary folder,
the progress bars and the checkpoints. Each loop is timed ``REPEATS`` times, alternating, in CPU seconds of
this process (one torch thread); making and finishing the wandb run is left out of the timing. Printed: the
ratio of the median times.

    .venv/bin/python benchmarks/bench_fit_overhead.py
"""

import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from labutils.gradflow import GradientRecorder  # noqa: E402
from labutils.tracking import Tracker  # noqa: E402
from labutils.train import fit  # noqa: E402

EPOCHS, REPEATS, N_TRAIN, N_VAL, BATCH, LR = 2, 7, 8192, 2048, 128, 0.05


def model_and_data():
    torch.manual_seed(0)
    x, y = torch.randn(N_TRAIN + N_VAL, 784), torch.randint(0, 10, (N_TRAIN + N_VAL,))
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    train = DataLoader(TensorDataset(x[:N_TRAIN], y[:N_TRAIN]), batch_size=BATCH, shuffle=True)
    return model, train, DataLoader(TensorDataset(x[N_TRAIN:], y[N_TRAIN:]), batch_size=BATCH)


def bare_loop(model, train, val, folder) -> float:
    start = time.process_time()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    for _ in range(EPOCHS):
        model.train()
        for x, y in train:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in val:
                correct += (model(x).argmax(dim=1) == y).sum().item()
    return time.process_time() - start


def fit_everything_on(model, train, val, folder) -> float:
    with GradientRecorder(model, every=1) as recorder, Tracker("bench", "fit", mode="offline", dir=folder) as tracker:
        everything = dict(grad_recorder=recorder, tracker=tracker, checkpoint_dir=Path(folder) / "ckpt", progress=True)
        start = time.process_time()
        fit(model, train, val, epochs=EPOCHS, optimizer="sgd", lr=LR, device="cpu", **everything)
        return time.process_time() - start


def timed(loop) -> float:
    """CPU seconds of one run of ``loop`` on a fresh model and data, in a temporary folder."""
    model, train, val = model_and_data()
    with tempfile.TemporaryDirectory() as folder:
        return loop(model, train, val, folder)


if __name__ == "__main__":
    torch.set_num_threads(1)
    for loop in (bare_loop, fit_everything_on):  # warm-up: the first calls load code and fill caches
        timed(loop)
    runs = [(timed(bare_loop), timed(fit_everything_on)) for _ in range(REPEATS)]
    bare, fitted = (statistics.median(column) for column in zip(*runs))
    print(f"fit / bare loop: {fitted / bare:.3f} (CPU seconds, medians of {REPEATS}: {fitted:.2f} / {bare:.2f})")
