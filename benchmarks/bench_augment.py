"""Images per second of the per-image augmentation pipeline and of the batched one, for every preset.

Per-image: ``labutils.data.ImageArrayDataset`` with the preset's torchvision ``v2`` transform, read by a DataLoader
without worker processes, as ``make_loaders`` builds it on a 2-core machine. Batched:
``labutils.batch_augment.DeviceLoader`` with the same preset on ``--device`` (default: the CPU). Both hand over
shuffled, normalised float32 batches of 128 made from uint8 images of 3 x 32 x 32 (1 x 28 x 28 for ``digits``) with
random pixels; the speed does not depend on what the pictures show.

The CPU runs one torch thread and is timed in CPU seconds of this process, so the numbers are per core and hold on a
busy machine; a GPU is timed in wall-clock seconds, synchronised. Each pipeline is timed ``REPEATS`` times,
alternating; printed: the medians in images per second and their ratio.

    .venv/bin/python benchmarks/bench_augment.py [--device cuda]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from labutils.batch_augment import BatchAugment, DeviceLoader  # noqa: E402
from labutils.data import AUGMENTATIONS, ImageArrayDataset, augmentation  # noqa: E402

REPEATS, BATCH, PER_IMAGE_N, BATCHED_N = 3, 128, 1024, 8192


def images(preset: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    shape = (1, 28, 28) if preset == "digits" else (3, 32, 32)
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8), rng.integers(0, 10, n)


def per_image_loader(preset: str):
    x, y = images(preset, PER_IMAGE_N)
    stats = (0.5,) * x.shape[1]
    dataset = ImageArrayDataset(x, y, stats, stats, augmentation(preset, x.shape[-1]))
    return DataLoader(dataset, batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(0))


def batched_loader(preset: str, device: torch.device):
    x, y = images(preset, PER_IMAGE_N if preset == "augmix" else BATCHED_N)  # AugMix runs image by image
    stats = (0.5,) * x.shape[1]
    augment = None if preset == "none" else BatchAugment(preset)
    return DeviceLoader(x, y, stats, stats, augment, batch_size=BATCH, device=device, seed=0)


def images_per_second(loader, device: torch.device) -> float:
    """One pass over ``loader``: images per CPU second on the CPU, per wall-clock second on an accelerator."""
    on_cpu = device.type == "cpu"
    clock = time.process_time if on_cpu else time.perf_counter
    start, seen = clock(), 0
    for x, _ in loader:
        seen += len(x)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return seen / (clock() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="where the batched pipeline runs (cpu, cuda, mps)")
    device = torch.device(parser.parse_args().device)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, one CPU thread; batched pipeline on {device}; batches of {BATCH}")
    print(f"{'preset':<12} {'per-image img/s':>16} {'batched img/s':>14} {'batched / per-image':>20}")
    for preset in AUGMENTATIONS:
        slow, fast = per_image_loader(preset), batched_loader(preset, device)
        for loader in (slow, fast):  # warm-up: code loaded, caches and the device's kernels ready
            next(iter(loader))
        runs = [(images_per_second(slow, torch.device("cpu")), images_per_second(fast, device)) for _ in range(REPEATS)]
        per_image, batched = (statistics.median(column) for column in zip(*runs))
        print(f"{preset:<12} {per_image:>16,.0f} {batched:>14,.0f} {batched / per_image:>19.1f}x")


if __name__ == "__main__":
    main()
