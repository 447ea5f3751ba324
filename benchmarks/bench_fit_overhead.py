"""How much does ``labutils.train.fit`` cost on top of a bare PyTorch training loop?

Both loops train the same model (same seed, same initial weights) on the same in-memory tensors in
the same batch order for the same epochs, with SGD (lr 0.05, momentum 0.9), and validate after every
epoch. The bare loop is the textbook one: forward, cross-entropy, backward, step; argmax accuracy on
the validation set. ``fit`` runs with everything a lab turns on: a GradientRecorder (ReLU hooks
attached, recording every step unless ``--record-every`` says otherwise), an offline wandb Tracker
and the tqdm progress bars. Its overhead is everything else it does: device-side loss/accuracy
bookkeeping, gradient norms and dead-ReLU statistics, logging, the history. Part of it is paid once
per run or per epoch (progress bars, the tracker's epoch log and summary, the recorder's copy to the
host), so shorter runs (``--epochs 1``) show a larger share than long trainings.

Timing. Each workload is measured in ``--processes`` fresh Python processes, one after the other. Each process
runs every configuration once for one epoch (warm-up), then ``--repeats`` times in an order rotated from repeat
to repeat, each run after a garbage collection. The report pools the runs of all processes and gives medians of
their CPU time (the primary measure: the course machine's two cores are shared, and CPU time does not count the
time another job holds the core) and of wall time. The overhead is the ratio of the medians; the spread of the
per-repeat ratios (each configuration against the bare loop of the same repeat) is printed next to it, and so is
each process's own ratio. Why several processes: on the course machine (a shared 2-core VM) the bare loop's
median differed by up to 19 % from one process to the next, and the per-process ratio of ``fit`` (recorder,
wandb, bars) to the bare loop ranged from +1 % to +31 % on the depth-32 MLP in one invocation, with the same
code: more than the spread within a process. What sets a process apart was not pinned down (page faults and
garbage collections are too few to explain it); pooling several processes averages it out.

How sure a verdict is. Next to the overhead the report prints a 95 % bootstrap interval (the processes redrawn with
their runs: :func:`overhead_interval`) and says whether the target line lies inside it. On a day when one
3-epoch run's CPU time varies by ~12 % from run to run (the bare MLP loop took 0.67-1.07 s in one invocation), 40
runs of each configuration (8 processes x 5) gave an interval about 13 points wide, which no verdict on a 10 % line
survives. Later the same day, 12 processes x 8 repeats gave the MLP +8.7 %, interval +1.7 … +12.8 (the CNN +4.1 %,
+2.0 … +6.6; the depth-32 MLP +6.9 %, +0.2 … +9.8). ``--only-target`` times just the two configurations the
target compares, to fit more runs in the same time. The interval leaves out a shift of the whole invocation: the
bare MLP step measured 3.2-3.4 ms on earlier days, and 4.5 ms and 3.6 ms in those two invocations, with ``fit``
adding +233 and +315 µs a step.

Where the overhead goes, measured on the 784-256-256-10 MLP (the workload nearest the target). It is not in the
instructions executed: counted with callgrind over the timed region of one 3-epoch run, ``fit`` executes 0.1 % more
instructions than the bare loop, and 1.6 % more with the recorder (about half of it the norm kernel over the 270k
gradient entries). In CPU time ``fit`` alone costs +2-3 % in most runs, most of it from keeping each batch's class
scores and labels until the read-back (a ``fit`` that keeps only the losses measured +0.1 to +1.3 %; counting the
correct predictions batch by batch instead measured +3 %); the recorder adds +3-5 % (its gradient norms take 31 µs a
step with warm caches and 50-90 µs inside the training loop); a wandb ``run.log`` after a training epoch costs 1.3-1.9
ms against 0.3 ms when called back to back; the progress bars cost ~3.5 ms a run (6-7 redraws of ~0.3 ms and ~4 µs an
update).

Creating and finishing the wandb run happens outside the timed region (a bare loop that logged to wandb would
pay it too) and is reported on its own line. wandb (0.31, the version checked) runs its service (``wandb-core``)
as a child process: its CPU time is not in this process's, and it runs whether or not the loop logs; what the run
costs in this process is ``run.log`` (serialising and sending each call: see above for what a call costs),
which ``fit`` calls once per epoch (and within an epoch at most every ``LOG_EVERY_S`` seconds for the running
loss). The load average at the start and end of each workload is printed, since a loaded machine inflates every
ratio's spread.

    .venv/bin/python benchmarks/bench_fit_overhead.py                     # all workloads, 1 thread (~12 min)
    .venv/bin/python benchmarks/bench_fit_overhead.py --model mlp --breakdown
    .venv/bin/python benchmarks/bench_fit_overhead.py --model mlp --processes 1 --repeats 21   # one process
    .venv/bin/python benchmarks/bench_fit_overhead.py --only-target --processes 12 --repeats 8  # a tighter interval
    .venv/bin/python benchmarks/bench_fit_overhead.py --model cnn --epochs 3 --device cuda

Target: ``fit`` with the recorder (every step) and offline wandb within +10 % of the bare loop.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labutils import seed_everything  # noqa: E402
from labutils.gradflow import GradientRecorder  # noqa: E402
from labutils.tracking import Tracker  # noqa: E402
from labutils.train import fit  # noqa: E402

TARGET = 0.10
WORKLOADS = {
    # name: (input shape, train size, val size, batch size, what it is)
    "cnn": ((3, 32, 32), 2048, 512, 128, "SimpleCNN(width=16), CIFAR-sized inputs"),
    "mlp": ((784,), 8192, 2048, 128, "MLP 784-256-256-10 (ReLU)"),
    "deep-mlp": ((784,), 8192, 2048, 128, "lab 04's residual MLP, width 16, depth 32: 33 linear layers, 32 ReLUs"),
}
# configuration: (gradient recorder, wandb tracker, progress bars); None = the bare loop
CONFIGS = {
    "bare": ("bare PyTorch loop", None),
    "fit": ("fit (no recorder/tracker/bar)", (False, False, False)),
    "fit_recorder": ("fit + recorder", (True, False, False)),
    "fit_wandb": ("fit + wandb", (False, True, False)),
    "fit_bar": ("fit + progress bars", (False, False, True)),
    "fit_recorder_wandb": ("fit + recorder + wandb + bars", (True, True, True)),
}
BREAKDOWN = ("fit_recorder", "fit_wandb", "fit_bar")


def make_model(kind: str) -> nn.Module:
    if kind == "cnn":
        from labutils.models import SimpleCNN

        return SimpleCNN(num_classes=10, width=16)
    if kind == "deep-mlp":
        from labutils.models import MLP

        return MLP(784, 10, width=16, depth=32, residual=True)
    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))


def make_loaders(kind: str):
    shape, n_train, n_val, batch, _ = WORKLOADS[kind]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_train + n_val, *shape, generator=g)
    y = torch.randint(0, 10, (n_train + n_val,), generator=g)
    train = DataLoader(TensorDataset(x[:n_train], y[:n_train]), batch_size=batch, shuffle=True)
    val = DataLoader(TensorDataset(x[n_train:], y[n_train:]), batch_size=2 * batch)
    return train, val


def bare_loop(model, train, val, epochs: int, device) -> int:
    """The textbook loop: train with SGD, then count correct validation predictions, every epoch."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    correct = 0
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
    gc.collect()
    with Clock(device) as clock:
        bare_loop(model, train, val, epochs, device)
    return clock


def time_fit(
    kind: str, epochs: int, device, *, recorder: bool, wandb: bool, bar: bool, wandb_dir: str, record_every: int = 1
) -> tuple[Clock, float]:
    """Time inside fit, and seconds to start + finish the tracker (outside the timed region)."""
    seed_everything(0)
    model = make_model(kind).to(device)
    train, val = make_loaders(kind)
    t_tracker = time.perf_counter()
    tracker = Tracker(project="labs-bench", name=f"fit-{kind}", mode="offline", dir=wandb_dir) if wandb else None
    t_tracker = time.perf_counter() - t_tracker
    rec = GradientRecorder(model, every=record_every).attach() if recorder else None
    gc.collect()
    with Clock(device) as clock:
        fit(
            model,
            train,
            val,
            epochs=epochs,
            optimizer="sgd",
            lr=0.05,
            momentum=0.9,
            grad_recorder=rec,
            tracker=tracker,
            device=device,
            progress=bar,
            amp=False,
        )
    t1 = time.perf_counter()
    if tracker is not None:
        tracker.finish()
    if rec is not None:
        rec.detach()
    return clock, (t_tracker + time.perf_counter() - t1 if wandb else 0.0)


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def overhead_interval(
    measured: list[dict], key: str, unit: str = "cpu", level: float = 0.95, resamples: int = 4000, seed: int = 0
) -> tuple[float, float]:
    """A bootstrap interval for the overhead ``median(key) / median(bare) - 1`` of the pooled runs.

    Each resample redraws the processes with replacement and pools all the runs of the drawn ones (a cluster
    bootstrap: a process's runs stay together, since they share what sets a process apart, and its runs' own
    noise is already in them). ``level`` is the central share of the ``resamples`` overheads returned. The
    interval says how far another invocation's overhead could land through the noise between runs and between
    processes; a shift that hits every process of an invocation alike (the machine slower or faster that day)
    is not in it. With one process there is nothing to redraw but its runs: each configuration's are redrawn on
    their own, and the interval then leaves out what sets one process apart from another.
    """
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, len(measured), size=(resamples, len(measured)))

    def resampled_medians(config: str) -> np.ndarray:
        runs = np.array([m[unit][config] for m in measured], dtype=float)  # (processes, runs)
        if len(measured) == 1:
            return np.median(runs[0][rng.integers(0, runs.shape[1], size=(resamples, runs.shape[1]))], axis=1)
        return np.median(runs[drawn].reshape(resamples, -1), axis=1)

    overheads = resampled_medians(key) / resampled_medians("bare") - 1
    lo, hi = np.quantile(overheads, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def measure(kind: str, args, device, wandb_dir: str) -> dict:
    """This process's timings of one workload: after one warm-up run of each configuration, ``args.repeats``
    repeats in rotated order. ``{"cpu": {config: [s, ...]}, "wall": {...}, "tracker_s": [...]}``."""
    configs = _configs(args)

    def run(key: str, epochs: int) -> tuple[Clock, float]:
        flags = CONFIGS[key][1]
        if flags is None:
            return time_bare(kind, epochs, device), 0.0
        return time_fit(
            kind,
            epochs,
            device,
            recorder=flags[0],
            wandb=flags[1],
            bar=flags[2],
            wandb_dir=wandb_dir,
            record_every=args.record_every,
        )

    for key in configs:  # warm-up (one epoch): allocator, kernels, imports, wandb's service
        run(key, 1)
    out = {"cpu": {key: [] for key in configs}, "wall": {key: [] for key in configs}, "tracker_s": []}
    for r in range(args.repeats):  # rotated order, so drifting machine load hits all alike
        for key in configs[r % len(configs) :] + configs[: r % len(configs)]:
            clock, s = run(key, args.epochs)
            out["cpu"][key].append(clock.cpu)
            out["wall"][key].append(clock.wall)
            if key == "fit_recorder_wandb":
                out["tracker_s"].append(s)
    return out


def measure_in_processes(kind: str, args) -> list[dict]:
    """:func:`measure` in ``args.processes`` fresh Python processes, one after the other (see the module's
    docstring: one process's ratio alone can be off by several points)."""
    flags = ["--model", kind, "--epochs", str(args.epochs), "--repeats", str(args.repeats)]
    flags += ["--threads", str(args.threads), "--device", args.device, "--record-every", str(args.record_every)]
    flags += ["--breakdown"] if args.breakdown else []
    flags += ["--only-target"] if args.only_target else []
    measured = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.processes):
            out = Path(tmp) / f"process-{i}.json"
            subprocess.run([sys.executable, __file__, *flags, "--worker", str(out)], check=True)
            measured.append(json.loads(out.read_text()))
    return measured


def _configs(args) -> list[str]:
    if args.only_target:
        return ["bare", "fit_recorder_wandb"]
    return ["bare", "fit", *(BREAKDOWN if args.breakdown else ()), "fit_recorder_wandb"]


def report(kind: str, args, device, measured: list[dict], load_before: float) -> dict:
    """Print one workload's table from the timings of every process, pooled, and return its row."""
    configs = _configs(args)
    pooled = {unit: {key: [t for m in measured for t in m[unit][key]] for key in configs} for unit in ("cpu", "wall")}
    shape, n_train, _, batch, what = WORKLOADS[kind]
    steps = args.epochs * -(-n_train // batch)
    runs = len(pooled["cpu"]["bare"])
    row = {
        "workload": what,
        "steps": steps,
        "processes": len(measured),
        "repeats_per_process": args.repeats,
        "epochs": args.epochs,
        "record_every": args.record_every,
        "device": str(device),
        "threads": args.threads,
        "tracker_start_finish_s": statistics.median(t for m in measured for t in m["tracker_s"]),
        "load_average_1min": [load_before, os.getloadavg()[0]],
        "cpu_cores": os.cpu_count(),
    }
    print(
        f"\n{kind}: {what}; {steps} steps ({args.epochs} epoch(s)) of batch {batch}, input {shape}, "
        f"device {device}, {args.threads} thread(s), recorder every {args.record_every} step(s), "
        f"medians of {runs} runs ({len(measured)} process(es) x {args.repeats} repeats); "
        f"load average {load_before:.2f} -> {row['load_average_1min'][1]:.2f} on {os.cpu_count()} cores"
    )
    print(f"  {'':32s} {'wall s':>8s} {'ratio':>6s}   {'CPU s':>8s} {'ratio':>6s}   per-repeat CPU ratio, quartiles")
    bare_cpu = pooled["cpu"]["bare"]
    for key in configs:
        wall, cpu = statistics.median(pooled["wall"][key]), statistics.median(pooled["cpu"][key])
        row[f"{key}_wall_s"], row[f"{key}_cpu_s"] = wall, cpu
        row[f"{key}_cpu_runs_s"], row[f"{key}_wall_runs_s"] = pooled["cpu"][key], pooled["wall"][key]
        spread = ""
        if key != "bare":
            q1, q2, q3 = _quartiles([c / b for c, b in zip(pooled["cpu"][key], bare_cpu)])
            row[f"{key}_cpu_ratio_quartiles"] = [q1, q2, q3]
            spread = f"{q1:.3f} {q2:.3f} {q3:.3f}"
        print(
            f"  {CONFIGS[key][0]:32s} {wall:8.3f} {wall / row['bare_wall_s']:6.3f}   "
            f"{cpu:8.3f} {cpu / row['bare_cpu_s']:6.3f}   {spread}"
        )
    for unit in ("wall", "cpu"):
        row[f"overhead_{unit}"] = row[f"fit_recorder_wandb_{unit}_s"] / row[f"bare_{unit}_s"] - 1
    row["target_met"] = row["overhead_cpu"] <= TARGET
    lo, hi = overhead_interval(measured, "fit_recorder_wandb")
    row["overhead_cpu_interval95"] = [lo, hi]
    per_step = 1e6 * (row["fit_recorder_wandb_cpu_s"] - row["bare_cpu_s"]) / steps
    print(
        f"  overhead of fit + recorder + wandb + bars: {100 * row['overhead_cpu']:+.1f} % CPU "
        f"({per_step:+.0f} µs per step on {1e3 * row['bare_cpu_s'] / steps:.2f} ms), "
        f"{100 * row['overhead_wall']:+.1f} % wall  ->  target <= +{100 * TARGET:.0f} % CPU "
        f"{'MET' if row['target_met'] else 'NOT MET'}"
    )
    print(f"  95 % bootstrap interval of the CPU overhead: {100 * lo:+.1f} … {100 * hi:+.1f} % ({_verdict(lo, hi)})")
    if len(measured) > 1:  # each process's own ratio of medians: how far one process alone could mislead
        by_process = [
            statistics.median(m["cpu"]["fit_recorder_wandb"]) / statistics.median(m["cpu"]["bare"]) - 1
            for m in measured
        ]
        row["overhead_cpu_by_process"] = by_process
        print(f"  the same, each process alone: {' '.join(f'{100 * o:+.1f}' for o in by_process)} %")
    print(f"  wandb run start + finish (not in the ratio): {row['tracker_start_finish_s']:.2f} s")
    return row


def _verdict(lo: float, hi: float) -> str:
    """What the interval says about the target."""
    if hi <= TARGET:
        return "within the target however the noise fell"
    if lo > TARGET:
        return "over the target however the noise fell"
    return "the target is inside it: these runs cannot tell"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=[*WORKLOADS, "all"], default="all")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each configuration per process")
    parser.add_argument(
        "--processes",
        type=int,
        default=7,
        help="fresh Python processes per workload, whose runs are pooled (1: this process only)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the course machine shares 2 cores)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--record-every", type=int, default=1, help="GradientRecorder stride in steps")
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also time fit with only the recorder, only wandb, only the progress bars",
    )
    parser.add_argument(
        "--only-target",
        action="store_true",
        help="time only the two configurations the target compares (more runs of each in the same time)",
    )
    parser.add_argument("--json", type=Path, help="also write the results (and every repeat's times) here")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)  # (one process's timings, as JSON, here)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.processes < 1 or args.repeats * args.processes < 2:
        parser.error(
            f"--repeats x --processes must be at least 2 runs for a median and quartiles, "
            f"got {args.repeats} x {args.processes}."
        )
    if args.only_target and args.breakdown:
        parser.error("--only-target and --breakdown exclude each other: the breakdown times the other configurations.")
    if args.worker is not None and args.model == "all":
        parser.error("--worker measures one workload: give --model.")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    os.environ.setdefault("WANDB_SILENT", "true")
    results = {}
    with tempfile.TemporaryDirectory() as wandb_dir:
        if args.worker is not None:
            args.worker.write_text(json.dumps(measure(args.model, args, device, wandb_dir)))
            return {}
        for kind in WORKLOADS if args.model == "all" else [args.model]:
            load_before = os.getloadavg()[0]
            if args.processes == 1:
                measured = [measure(kind, args, device, wandb_dir)]
            else:
                measured = measure_in_processes(kind, args)
            results[kind] = report(kind, args, device, measured, load_before)
    runs = args.processes * args.repeats
    print(
        f"\nTarget: fit with the recorder (every {args.record_every} step(s)) + offline wandb + progress bars "
        f"within +{100 * TARGET:.0f} % CPU time of the bare loop (medians of {runs} runs in {args.processes} "
        "process(es)):"
    )
    for kind, row in results.items():
        lo, hi = row["overhead_cpu_interval95"]
        print(
            f"  {kind:9s} {100 * row['overhead_cpu']:+6.1f} %  (95 % interval {100 * lo:+.1f} … {100 * hi:+.1f})  "
            f"{'met' if row['target_met'] else 'NOT met'}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
