"""Training on several GPUs or processes with PyTorch's own engine: ``torchrun`` and DistributedDataParallel.

One process trains as :func:`labutils.train.fit` always did. Launched by ``torchrun`` (``python -m labutils train
RECIPE.json --nproc N`` does it for you), each of the N processes runs the same ``fit`` and this module makes it
data-parallel:

- :func:`init` joins the process group torchrun announced in the environment (``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``): NCCL when training on CUDA, each process on its own GPU (``cuda:LOCAL_RANK``); Gloo on the CPU.
- :func:`setup` wraps the model in ``DistributedDataParallel``, which averages the gradients of all processes in
  ``backward()``, so every process takes the same optimizer step and the weights stay equal everywhere; and it
  gives each process its own shard of the training data (:func:`shard_loader`, a ``DistributedSampler``).
- :func:`sum_across_ranks` / :func:`mean_across_ranks` turn each process's numbers into the run's numbers.
- :func:`is_main` (rank 0) alone writes checkpoints and results, logs to wandb and shows progress bars;
  :func:`barrier` makes the others wait until what it wrote is on disk.

**Batch size.** A loader's (or recipe's) ``batch_size`` is the *global* batch: the samples of one optimizer step,
all processes together. Each process loads ``batch_size / N`` of them, so the same recipe takes the same number of
steps of the same size whatever N is (and the learning rate needs no change).

**Validation** runs on the whole validation set in every process, with weights that are equal everywhere: the
numbers are exact (no sample repeated to even out shards) and every process takes the same early-stopping,
scheduler and best-checkpoint decisions.

Without torchrun every function here does nothing (or returns its input), so one process is unchanged, bit for bit.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import torch
from torch import distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")  # what torchrun sets in every process it starts


# ---- Who am I? -------------------------------------------------------------------------------------------------------
def launched() -> bool:
    """True in a process started by ``torchrun`` (its environment variables are set), even with one process."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def active() -> bool:
    """True once this process has joined a process group (:func:`init`)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's number, 0 … world_size - 1 (0 without torchrun)."""
    if active():
        return dist.get_rank()
    return int(os.environ["RANK"]) if launched() else 0


def world_size() -> int:
    """How many processes train together (1 without torchrun)."""
    if active():
        return dist.get_world_size()
    return int(os.environ["WORLD_SIZE"]) if launched() else 1


def is_main() -> bool:
    """True in the process that writes files, logs and draws progress bars: rank 0, or the only process."""
    return rank() == 0


# ---- Joining and leaving the process group ---------------------------------------------------------------------------
def init(device=None):
    """Under torchrun, join the process group (once per process) and return this process's device; otherwise
    return ``device`` unchanged.

    ``device`` (default :func:`labutils.get_device`) chooses the backend: CUDA trains with NCCL, each process on the
    GPU ``cuda:LOCAL_RANK`` (whatever CUDA index was asked for); the CPU with Gloo. Apple's MPS has no backend.
    """
    if not launched():
        return device
    from labutils import get_device

    device = torch.device(device) if device is not None else get_device()
    if device.type not in ("cuda", "cpu"):
        raise ValueError(
            f"Training under torchrun needs a CUDA or CPU device, got {device.type!r}: "
            "set LABS_DEVICE=cpu (Gloo) or use CUDA GPUs (NCCL)."
        )
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    if not active():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        atexit.register(teardown)
    return device


def teardown() -> None:
    """Leave the process group (at the end of a torchrun process; registered by :func:`init` to run at exit).

    The processes first wait for each other: one that left while another still ran a collective (the last epoch's
    sums, process 0's checkpoint barrier) could be aborted by Gloo's threads at exit."""
    if active():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every process has reached this line (nothing to wait for in one process)."""
    if active():
        dist.barrier()


# ---- The model and the data of one process ---------------------------------------------------------------------------
@dataclass
class DataParallelSetup:
    """What :func:`setup` gives :func:`labutils.train.fit`: the ``model`` to train (``DistributedDataParallel``
    around the caller's model under torchrun, else the model itself) and the training ``loader`` (this process's
    shard under torchrun, else the loader given). Checkpoints, evaluation and early stopping keep using the
    caller's own model: the wrapper shares its parameters."""

    model: nn.Module
    loader: Any

    def set_epoch(self, epoch: int) -> None:
        """Tell the ``DistributedSampler`` which epoch starts, so that each epoch shuffles the shards anew (the
        order depends on the seed and the epoch only, so a resumed run draws the same order again)."""
        sampler = getattr(self.loader, "sampler", None)
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)


def setup(model: nn.Module, loader) -> DataParallelSetup:
    """Under torchrun (after :func:`init`), wrap ``model`` (already on this process's device) in
    ``DistributedDataParallel`` and shard ``loader`` (:func:`shard_loader`); otherwise return both unchanged."""
    if not launched():
        return DataParallelSetup(model, loader)
    device = init(next(model.parameters()).device)
    wrapped = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return DataParallelSetup(wrapped, shard_loader(loader, rank(), world_size()))


def shard_loader(loader: DataLoader, rank: int, world_size: int) -> DataLoader:
    """The training ``loader`` for process ``rank`` of ``world_size``: the same dataset, batches of
    ``batch_size / world_size`` samples, and a ``DistributedSampler`` that deals the samples out.

    Each epoch the sampler shuffles all N indices with ``seed + epoch`` (the seed of the loader's generator, so
    every process draws the same permutation) and gives process ``rank`` every ``world_size``-th of them, starting
    at ``rank``: the shards never overlap. When N is not divisible by ``world_size``, a few samples are repeated so
    that every process takes the same number of steps. A loader that shuffles nothing keeps its order.
    """
    if isinstance(getattr(loader, "sampler", None), DistributedSampler):
        return loader  # already sharded by the caller
    if not isinstance(loader, DataLoader) or loader.batch_size is None:
        raise ValueError(
            f"Training under torchrun shards a torch DataLoader with a batch_size, got {type(loader).__name__}: "
            "build the training loader with DataLoader(dataset, batch_size=..., shuffle=True)."
        )
    if loader.batch_size % world_size:
        raise ValueError(
            f"batch_size={loader.batch_size} is the global batch and cannot be split evenly over {world_size} "
            f"processes: use a multiple of {world_size}."
        )
    shuffle = isinstance(loader.sampler, RandomSampler)
    generator = getattr(loader.sampler, "generator", None) or loader.generator
    seed = generator.initial_seed() if generator is not None else 0
    sampler = DistributedSampler(
        loader.dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=loader.drop_last
    )
    options = {"prefetch_factor": loader.prefetch_factor} if loader.num_workers > 0 else {}
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size // world_size,
        sampler=sampler,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        worker_init_fn=loader.worker_init_fn,
        generator=loader.generator,  # the workers' seeds; saved in last.pt like a single process's
        persistent_workers=loader.persistent_workers,
        **options,
    )


# ---- Numbers of the whole run ----------------------------------------------------------------------------------------
def sum_across_ranks(*values: float) -> tuple:
    """The sums over all processes of each of ``values`` (an ``all_reduce``), as floats; without torchrun the
    values themselves, untouched. E.g. the summed losses, correct predictions and samples of each process give
    the loss and accuracy of the whole epoch."""
    if not active():
        return values
    on = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    totals = torch.tensor(values, dtype=torch.float64, device=on)
    dist.all_reduce(totals, op=dist.ReduceOp.SUM)
    return tuple(totals.tolist())


def mean_across_ranks(value: float) -> float:
    """The mean of ``value`` over all processes (``value`` itself without torchrun)."""
    if not active():
        return value
    (total,) = sum_across_ranks(value)
    return total / world_size()


# ---- Launching -------------------------------------------------------------------------------------------------------
def torchrun_command(arguments: list[str], nproc: int) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc_per_node N -m labutils ARGUMENTS``: torchrun on one
    machine, with a free port found on its own, starting N copies of ``python -m labutils ARGUMENTS``."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "labutils",
        *arguments,
    ]


def launch(arguments: list[str], nproc: int) -> int:
    """Run ``python -m labutils ARGUMENTS`` in ``nproc`` processes under torchrun; returns its exit status.

    Each process gets ``cores / nproc`` CPU threads unless ``OMP_NUM_THREADS`` is set (torchrun would otherwise
    give each one thread). Ctrl-C reaches torchrun too, which stops its processes; this waits for that.
    """
    from labutils.util import check_int

    check_int("nproc", nproc)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    process = subprocess.Popen(torchrun_command(arguments, nproc), env=env)
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.wait()
        raise


__all__ = [
    "launched",
    "active",
    "rank",
    "world_size",
    "is_main",
    "init",
    "teardown",
    "barrier",
    "DataParallelSetup",
    "setup",
    "shard_loader",
    "sum_across_ranks",
    "mean_across_ranks",
    "torchrun_command",
    "launch",
]
