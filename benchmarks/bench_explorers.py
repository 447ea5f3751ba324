"""Benchmark: how long each lab's explorer takes to redraw when a control moves (compute + draw + PNG, no browser).

Every explorer is built on the small runs of :func:`labutils.explore.demo_runs` (trained, or reloaded from the
cache in ``--runs``), then each of its controls is moved once, ``--repeats`` times over, on a freshly built
explorer each time (so lab 01's cache of trained settings starts empty every round). Each move is one timed redraw:
the plain function's computation, the matplotlib figure and its PNG. The table gives per explorer the median and
the slowest wall-clock redraw, and the median CPU time of this process: on a machine shared with other work the
wall clock grows with the load (printed first), the CPU time much less. NumPy's BLAS and torch get ``--threads``
threads, set before either is imported.

    python benchmarks/bench_explorers.py [--repeats 3] [--threads 1] [--runs DIR]

Target: median redraw under 0.5 s for every explorer.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

TARGET_S = 0.5


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="rounds of moving every control once")
    parser.add_argument("--threads", type=int, default=1, help="threads for NumPy's BLAS and torch")
    parser.add_argument("--runs", default=None, help="runs folder holding (or to hold) the demo runs")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.threads < 1:
        parser.error("--repeats and --threads must be >= 1")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    os.environ["LABS_RUNS"] = args.runs or tempfile.mkdtemp(prefix="bench-explorers-")
    os.environ.setdefault("WANDB_MODE", "disabled")

    import torch

    from labutils import explore
    from labutils.explore.core import another_value

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    demo = explore.demo_runs("quick")
    print(f"demo runs ready in {time.perf_counter() - started:.1f} s ({os.environ['LABS_RUNS']})")
    builders = {
        "lab00_data": lambda: explore.lab00_data(demo.mnist),
        "lab01_decision_boundary": explore.lab01_decision_boundary,
        "lab02_optimizers": explore.lab02_optimizers,
        "lab03_convolution": explore.lab03_convolution,
        "lab03_feature_maps": lambda: explore.lab03_feature_maps(demo.cnn, demo.cnn_images, demo.cnn_labels),
        "lab04_gradient_flow": lambda: explore.lab04_gradient_flow(demo.lab04),
        "lab05_gradient_flow": lambda: explore.lab05_gradient_flow(demo.lab05),
        "lab06_augmentation": lambda: explore.lab06_augmentation(demo.mnist),
        "lab06_curves": lambda: explore.lab06_curves(demo.lab06),
        "lab07_transfer": lambda: explore.lab07_transfer(demo.lab07),
        "lab08_robustness": lambda: explore.lab08_robustness(**demo.lab08),
        "lab09_cam": lambda: explore.lab09_cam(demo.lab05["residual", 8].model, demo.cnn_images, demo.cnn_labels),
    }
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"load average {load} on {os.cpu_count()} CPUs")
    header = f"{'explorer':<26}{'median (s)':>11}{'slowest (s)':>12}{'cpu median (s)':>15}{'redraws':>9}"
    print(f"\n{header}  target: median < {TARGET_S} s")
    failed = []
    for name, build in builders.items():
        times, cpu = [], []
        for _ in range(args.repeats):
            explorer = build()
            for control in explorer.controls.values():
                start, start_cpu = time.perf_counter(), time.process_time()
                control.value = another_value(control)  # the control's observer redraws the view
                times.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
                if explorer.last.error is not None:
                    print(f"{name}: the redraw failed:\n{''.join(explorer.last.error)}", file=sys.stderr)
                    return 1
        median = statistics.median(times)
        met = median < TARGET_S
        failed += [] if met else [name]
        row = f"{name:<26}{median:>11.3f}{max(times):>12.3f}{statistics.median(cpu):>15.3f}{len(times):>9}"
        print(f"{row}  {'ok' if met else 'SLOW'}")
    print(f"\n{len(builders) - len(failed)} of {len(builders)} explorers redraw in under {TARGET_S} s (median).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
