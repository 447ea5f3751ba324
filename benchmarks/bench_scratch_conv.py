"""Benchmark: NumPy ``labutils.scratch.layers.Conv2d`` forward+backward against torch's CPU conv2d.

Both sides compute the output and the gradients wrt input, weight and bias, in float32, on the
lab's shapes (N=64: 1->8 at 28x28, 8->16 at 14x14, 16->32 at 32x32; N=32: 64->64 at 16x16;
kernel 3, padding 1). Runs alternate between the two implementations so both see the same machine
load; each time is the median of ``--repeats`` runs (the ratio of the fastest runs is printed too:
on a busy machine it is the steadier number). NumPy's BLAS and torch get the same thread
count (``--threads``, default 1), set before either library is imported.

    python benchmarks/bench_scratch_conv.py [--threads 1] [--repeats 15]

Target: geometric mean of numpy/torch <= 2 (the matrix products are the floor; naive loops are
about a thousand times slower).
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="threads for both NumPy's BLAS and torch")
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per shape and implementation")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.repeats < 1:
        parser.error("--threads and --repeats must be >= 1")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    import numpy as np
    import torch
    from threadpoolctl import threadpool_info

    from labutils.scratch.conv_checks import LAB_BENCH_SHAPES, benchmark_conv_layers, geometric_mean, thread_limit

    with thread_limit(args.threads):
        blas = [f"{p['internal_api']} {p['version']} ({p['num_threads']} threads)" for p in threadpool_info()]
        print(f"numpy {np.__version__}, BLAS: {', '.join(blas) or 'unknown'}")
        print(
            f"torch {torch.__version__}, {torch.get_num_threads()} threads; float32, kernel 3, padding 1; "
            f"median of {args.repeats} runs\n"
        )
        rows = benchmark_conv_layers(LAB_BENCH_SHAPES, repeats=args.repeats)

    print(
        f"{'shape (N, C_in->C_out, HxW)':<28}{'numpy ms':>10}{'torch ms':>10}{'ratio':>8}"
        f"{'(minima)':>10}{'grad diff':>11}"
    )
    for r in rows:
        shape = f"N={r['N']}, {r['C_in']}->{r['C_out']}, {r['H']}x{r['W']}"
        print(
            f"{shape:<28}{r['numpy_ms']:>10.2f}{r['torch_ms']:>10.2f}{r['ratio']:>8.2f}{r['ratio_of_minima']:>10.2f}"
            f"{r['grad_rel_diff']:>11.1e}"
        )
    mean = geometric_mean(r["ratio"] for r in rows)
    mean_min = geometric_mean(r["ratio_of_minima"] for r in rows)
    print(f"\ngeometric mean ratio (numpy / torch, medians): {mean:.2f}  (target <= 2)")
    print(f"geometric mean ratio of the fastest runs:       {mean_min:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
