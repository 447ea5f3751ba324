"""How much does ``labutils.train.fit`` cost on top of a bare PyTorch training loop?

Both loops train the same model (same seed, same initial weights) on the same in-memory tensors
for the same epochs, with SGD, and validate after every epoch. ``fit`` runs with everything a lab
turns on: the GradientRecorder (hooks attached, every step), an offline wandb Tracker and the tqdm
progress bars. Its overhead is everything else it does: device-side loss/accuracy bookkeeping,
gradient recording, logging, the history. Each configuration runs ``--repeats`` times, interleaved,
and the median is reported, both of wall time and of this process's CPU time (on a shared machine
the CPU time is the steadier of the two; wandb's own writer process is not in it). Creating and
finishing the wandb run happens outside the timed region (a bare loop that logged to wandb would pay
it too) and is reported on its own line.

    .venv/bin/python benchmarks/bench_fit_overhead.py               # small CNN and an MLP, 1 thread
    .venv/bin/python benchmarks/bench_fit_overhead.py --model cnn --epochs 3 --repeats 5 --device cuda

Target: ``fit`` (recorder + wandb) within 10 % of the bare loop.
"""

from __future__ import annotations

import argparse
import json
import os
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

from labutils import seed_everything  # noqa: E402
from labutils.gradflow import GradientRecorder  # noqa: E402
from labutils.tracking import Tracker  # noqa: E402
from labutils.train import fit  # noqa: E402

WORKLOADS = {
    # name: (input shape, train size, val size, batch size)
    "cnn": ((3, 32, 32), 2048, 512, 128),
    "mlp": ((784,), 8192, 2048, 128),
}


def make_model(kind: str) -> nn.Module:
    if kind == "cnn":
        from labutils.models import SimpleCNN

        return SimpleCNN(num_classes=10, width=16)
    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))


def make_loaders(kind: str):
    shape, n_train, n_val, batch = WORKLOADS[kind]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_train + n_val, *shape, generator=g)
    y = torch.randint(0, 10, (n_train + n_val,), generator=g)
    train = DataLoader(TensorDataset(x[:n_train], y[:n_train]), batch_size=batch, shuffle=True)
    val = DataLoader(TensorDataset(x[n_train:], y[n_train:]), batch_size=2 * batch)
    return train, val


def bare_loop(model, train, val, epochs: int, device) -> float:
    """The textbook loop: train with SGD, then measure validation accuracy, every epoch."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(epochs):
        model.train()
        for x, y in train:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in val:
                correct += (model(x.to(device)).argmax(1) == y.to(device)).sum().item()
    return correct


class Clock:
    """Wall and process-CPU seconds of a block (synchronising CUDA at both ends)."""

    def __init__(self, device):
        self.device = device

    def __enter__(self):
        _sync(self.device)
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        _sync(self.device)
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def time_bare(kind: str, epochs: int, device) -> Clock:
    seed_everything(0)
    model = make_model(kind).to(device)
    train, val = make_loaders(kind)
    with Clock(device) as clock:
        bare_loop(model, train, val, epochs, device)
    return clock


def time_fit(kind: str, epochs: int, device, *, full: bool, wandb_dir: str,
             record_every: int = 1) -> tuple[Clock, float]:
    """Time inside fit, and seconds to start + finish the tracker (outside the timed region)."""
    seed_everything(0)
    model = make_model(kind).to(device)
    train, val = make_loaders(kind)
    t_tracker = time.perf_counter()
    tracker = Tracker(project="labs-bench", name=f"fit-{kind}", mode="offline", dir=wandb_dir) if full else None
    t_tracker = time.perf_counter() - t_tracker
    recorder = GradientRecorder(model, every=record_every).attach() if full else None
    with Clock(device) as clock:
        fit(model, train, val, epochs=epochs, optimizer="sgd", lr=0.05, momentum=0.9, grad_recorder=recorder,
            tracker=tracker, device=device, progress=full, amp=False)
    t1 = time.perf_counter()
    if tracker is not None:
        tracker.finish()
        recorder.detach()
    return clock, t_tracker + time.perf_counter() - t1


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=[*WORKLOADS, "all"], default="all")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the course machine shares 2 cores)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--record-every", type=int, default=1, help="GradientRecorder stride in steps")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    os.environ.setdefault("WANDB_SILENT", "true")
    results = {}
    with tempfile.TemporaryDirectory() as wandb_dir:
        for kind in WORKLOADS if args.model == "all" else [args.model]:
            time_bare(kind, 1, device)            # warm-up: allocator, kernels, imports
            time_fit(kind, 1, device, full=True, wandb_dir=wandb_dir)
            bare, plain, full, tracker_s = [], [], [], []
            for _ in range(args.repeats):        # interleaved, so drifting machine load hits all alike
                bare.append(time_bare(kind, args.epochs, device))
                plain.append(time_fit(kind, args.epochs, device, full=False, wandb_dir=wandb_dir)[0])
                t, s = time_fit(kind, args.epochs, device, full=True, wandb_dir=wandb_dir,
                                record_every=args.record_every)
                full.append(t)
                tracker_s.append(s)
            shape, n_train, _, batch = WORKLOADS[kind]
            steps = args.epochs * -(-n_train // batch)
            results[kind] = row = {"steps": steps, "repeats": args.repeats, "epochs": args.epochs,
                                   "record_every": args.record_every,
                                   "device": str(device), "threads": args.threads,
                                   "tracker_start_finish_s": statistics.median(tracker_s)}
            print(f"\n{kind}: {steps} steps ({args.epochs} epochs), input {shape}, batch {batch}, device {device}, "
                  f"{args.threads} thread(s), recorder every {args.record_every} step(s), median of {args.repeats}")
            print(f"  {'':30s} {'wall s':>8s} {'ratio':>6s}   {'CPU s':>8s} {'ratio':>6s}")
            configs = (("bare PyTorch loop", "bare", bare), ("fit (no recorder/tracker/bar)", "fit", plain),
                       ("fit + recorder + wandb + bar", "fit_recorder_wandb", full))
            for label, key, clocks in configs:
                wall = statistics.median(c.wall for c in clocks)
                cpu = statistics.median(c.cpu for c in clocks)
                row[f"{key}_wall_s"], row[f"{key}_cpu_s"] = wall, cpu
                print(f"  {label:30s} {wall:8.3f} {wall / row['bare_wall_s']:6.3f}   "
                      f"{cpu:8.3f} {cpu / row['bare_cpu_s']:6.3f}")
            for unit in ("wall", "cpu"):
                row[f"overhead_{unit}"] = row[f"fit_recorder_wandb_{unit}_s"] / row[f"bare_{unit}_s"] - 1
            print(f"  overhead of fit + recorder + wandb: {100 * row['overhead_wall']:+.1f} % wall, "
                  f"{100 * row['overhead_cpu']:+.1f} % CPU (target <= +10 %); "
                  f"bare {1e3 * row['bare_wall_s'] / steps:.2f} ms/step")
            print(f"  wandb run start + finish (not in the ratio): {row['tracker_start_finish_s']:.2f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
