"""labutils: the shared code behind the Deep Learning Labs notebooks.

Every notebook imports from here; nothing reusable lives in a notebook.
Heavy modules (torch, torchvision, wandb) are imported lazily by the submodules
that need them, so ``import labutils`` stays cheap for the NumPy labs.
"""

from __future__ import annotations

import os
import random

__version__ = "0.1.0"

PROFILES = ("quick", "full")


def check_profile(profile: str) -> str:
    """Return ``profile`` if it is a known profile, else raise one clear ValueError."""
    if profile not in PROFILES:
        raise ValueError(
            f"Unknown profile {profile!r}: choose one of {', '.join(PROFILES)} "
            "('quick' = minutes on a laptop CPU, 'full' = the lab as designed)."
        )
    return profile


def default_profile() -> str:
    """The profile a notebook uses when none is injected: ``$LABS_PROFILE`` or ``"full"``."""
    return check_profile(os.environ.get("LABS_PROFILE", "full"))


def pick(profile: str, quick, full):
    """Choose a knob's default by profile: ``pick(PROFILE, quick=1, full=20)``."""
    return quick if check_profile(profile) == "quick" else full


def seed_everything(seed: int) -> int:
    """Seed Python, NumPy and (if installed) torch on every device. Returns the seed.

    Python's string hashing is not touched: it is fixed when the interpreter starts (``PYTHONHASHSEED``), so
    setting it here would change nothing in the running process.
    """
    import numpy as np

    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        import torch
    except ImportError:  # NumPy-only use of the package
        return seed
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return seed


def get_device(prefer: str | None = None):
    """The best available torch device: CUDA, then Apple MPS, then CPU.

    ``prefer`` (or ``$LABS_DEVICE``) forces one of ``"cuda"``, ``"mps"``, ``"cpu"``;
    asking for a device that is not available raises instead of silently falling back.
    """
    import torch

    prefer = prefer or os.environ.get("LABS_DEVICE")
    available = {
        "cuda": torch.cuda.is_available(),
        "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available(),
        "cpu": True,
    }
    if prefer is not None:
        if prefer not in available:
            raise ValueError(f"Unknown device {prefer!r}: choose one of cuda, mps, cpu.")
        if not available[prefer]:
            raise RuntimeError(f"Device {prefer!r} was requested but is not available on this machine.")
        return torch.device(prefer)
    for name in ("cuda", "mps"):
        if available[name]:
            return torch.device(name)
    return torch.device("cpu")


from labutils.params import knobs  # noqa: E402  (after pick/check_profile, which it uses)

__all__ = ["knobs", "PROFILES", "check_profile", "default_profile", "pick", "seed_everything", "get_device"]
