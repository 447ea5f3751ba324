"""Augmentation of a whole batch at once, on the device that trains.

The per-image pipeline (:func:`labutils.data.augmentation`, torchvision ``v2`` inside a DataLoader) draws a crop, a
flip, colour factors and an angle for one image at a time, in Python, on the CPU. A GPU trains a small ResNet on
thousands of images per second, far faster than that. Here every random choice is drawn for the whole batch at once,
one value *per image* (never one for the batch), and applied with a few tensor operations on the device that holds
the batch. Each step is the same as the per-image preset's:

================  ==================================================  =============================================
step              per-image preset (torchvision ``v2``)               here, on a batch ``x`` of shape (B, C, H, W)
================  ==================================================  =============================================
crop and flip     ``RandomCrop(size, padding=4)``,                    pad once, then read each image's window by
                  ``RandomHorizontalFlip()``                          index arithmetic; a flip reads columns backwards
colour jitter     ``ColorJitter(brightness, contrast, saturation)``   the same three formulas with a (B, 1, 1, 1)
                  in a random order per image                         factor, the order drawn per image
rotation, shift   ``RandomRotation(15)``,                             one ``grid_sample`` reading each output pixel
                  ``RandomAffine(10, translate=(0.1, 0.1))``          from its own image's rotated, shifted position
AugMix            ``AugMix(all_ops=False)``                           torchvision's own, image by image (see below)
================  ==================================================  =============================================

Pixel values stay whole numbers from 0 to 255 between the steps, as torchvision's uint8 images do, so for the same
random draws a batch equals the per-image result (``tests/test_batch_augment.py`` checks it, and that the draws
follow the same distributions). AugMix is torchvision's, applied to one image at a time on the batch's device:
torchvision's AugMix given a batch picks one chain of operations for the whole batch, which is not the per-image
augmentation the preset trains with.

>>> augment = BatchAugment("strong")
>>> x = augment(images_uint8, generator=torch.Generator().manual_seed(0))   # (B, C, H, W) uint8, same device
>>> loader = DeviceLoader(x_train, y_train, mean, std, augment, batch_size=128, device="cuda", seed=0)
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class BatchPreset:
    """What a preset does: ``padding`` pixels around a random crop of the image's own size (0: no crop),
    horizontal ``flip`` with probability 0.5, colour ``jitter`` factors drawn from [1 - jitter, 1 + jitter] for
    brightness, contrast and saturation (0: none), rotation by up to ``degrees`` either way, shifts up to
    ``translate`` times the side (rounded to whole pixels), and torchvision's ``augmix`` last."""

    padding: int = 0
    flip: bool = False
    jitter: float = 0.0
    degrees: float = 0.0
    translate: float = 0.0
    augmix: bool = False


# The presets of labutils.data.augmentation, step by step (a test compares them with the torchvision transforms).
PRESETS = {
    "none": BatchPreset(),
    "standard": BatchPreset(padding=4, flip=True),
    "strong": BatchPreset(padding=4, flip=True, jitter=0.4, degrees=15),
    "flip_jitter": BatchPreset(flip=True, jitter=0.2),
    "digits": BatchPreset(degrees=10, translate=0.1),
    "augmix": BatchPreset(padding=4, flip=True, augmix=True),
}


@dataclass
class Draws:
    """The random choices for a batch of B images, one per image (CPU tensors; :meth:`BatchAugment.apply` moves
    them to the batch's device).

    ``top``, ``left``: (B,) int64 corner of each crop in the padded image, from 0 to 2 * padding.
    ``flip``: (B,) bool. ``factors``: (B, 3) float32 brightness, contrast and saturation factors (1: unchanged).
    ``order``: (B, 3) int64, each row a permutation of 0 (brightness), 1 (contrast), 2 (saturation).
    ``angle``: (B,) float32 degrees, counter-clockwise. ``shift``: (B, 2) float32 whole pixels (right, down).
    ``augmix_seed``: seeds torchvision's AugMix for this batch.
    """

    top: torch.Tensor
    left: torch.Tensor
    flip: torch.Tensor
    factors: torch.Tensor
    order: torch.Tensor
    angle: torch.Tensor
    shift: torch.Tensor
    augmix_seed: int = 0


# ---- The steps, each on a whole batch ----------------------------------------------------------------------------
def crop_and_flip(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor, padding: int):
    """Each image's own crop of the zero-padded batch, mirrored where ``flip`` is True.

    ``images`` (B, C, H, W) of any dtype; ``top``, ``left`` (B,) offsets in the padded image (0..2*padding);
    ``flip`` (B,) bool. Returns (B, C, H, W), the dtype of ``images``. Output pixel (i, j) of image b is padded
    pixel (top[b] + i, left[b] + j), or column left[b] + W-1-j when mirrored: the flip comes after the crop, as in
    the per-image preset.
    """
    b, c, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    columns = torch.arange(w, device=images.device)
    rows = top[:, None] + torch.arange(h, device=images.device)  # (B, H)
    cols = left[:, None] + torch.where(flip[:, None], columns.flip(0), columns)  # (B, W)
    # where each output pixel lies in its flattened padded image, the same for every channel: (B, C, H*W)
    source = (rows[:, :, None] * padded.shape[3] + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
    return padded.flatten(2).gather(2, source).view(b, c, h, w)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma (ITU-R 601: 0.2989 R + 0.587 G + 0.114 B) of (B, 3, H, W) float pixels, rounded down to whole values
    like torchvision's uint8 grayscale; (B, 1, H, W). One-channel images are their own grayscale."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(dim=1)
    # r * 0.2989 + g * 0.587 + b * 0.114, added up in torchvision's order so that a sum a hair below a whole
    # number rounds down to the same value
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).floor_()[:, None]


def blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``factor * x + (1 - factor) * other``, clipped to 0..255 and rounded down to whole values (as storing the
    result in uint8 does). ``factor`` (B,) broadcasts over each image."""
    factor = factor[:, None, None, None]
    # x * factor + other * (1 - factor), with the second product and the sum in one step as torchvision's blend
    # does, so that rounding down gives the same whole values
    return (x * factor).addcmul_(other, 1 - factor).clamp_(0, 255).floor_()


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Every pixel times ``factor`` (B,): blending with a black image."""
    return (x * factor[:, None, None, None]).clamp_(0, 255).floor_()


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend each image with the mean of its grayscale: below 1 flatter, above 1 starker."""
    return blend(x, grayscale(x).mean(dim=(1, 2, 3), keepdim=True), factor)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend each image with its own grayscale: 0 grey, 1 unchanged, above 1 more colourful. Grey images
    (one channel) have no colour to change and come back as they are."""
    return x if x.shape[1] == 1 else blend(x, grayscale(x), factor)


def color_jitter(x: torch.Tensor, factors: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast and saturation with per-image ``factors`` (B, 3), in each image's own ``order`` (B, 3).

    ``x`` (B, C, H, W) float whole values 0..255. The three adjustments would commute without the clipping and
    rounding between them; with it the order changes the result, so it is drawn per image as torchvision does.
    There are six orders: each is applied at once to the images that drew it.
    """
    adjustments = (adjust_brightness, adjust_contrast, adjust_saturation)
    order = order.cpu()  # drawn on the CPU: choosing the images of each order needs no wait for the device
    parts, taken = [], []
    for steps in itertools.permutations(range(3)):
        chosen = (order == torch.tensor(steps)).all(dim=1).nonzero()[:, 0].to(x.device)
        part, part_factors = x.index_select(0, chosen), factors.index_select(0, chosen)
        for index in steps:
            part = adjustments[index](part, part_factors[:, index])
        parts.append(part)
        taken.append(chosen)
    # the images come out grouped by order: put each back in its place
    return torch.cat(parts).index_select(0, torch.cat(taken).argsort())


def rotate_and_shift(x: torch.Tensor, angle: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate each image by ``angle`` (B,) degrees counter-clockwise about its centre, then move it by ``shift``
    (B, 2) pixels (right, down); nearest pixel, zeros where nothing comes in. ``x`` (B, C, H, W) float.

    ``grid_sample`` asks, for every output pixel, where in the input to read: the inverse map, "undo the shift,
    then rotate back". Positions are measured in pixels from the image's centre (y pointing down), then divided
    by half the width and height, the units of ``grid_sample`` (-1 and 1 are the outer edges). Written out with
    broadcasting rather than ``affine_grid``, whose batched matrix product costs more on a CPU than the sampling.
    """
    _, _, h, w = x.shape
    radians = angle[:, None, None] * (math.pi / 180)  # (B, 1, 1)
    cos, sin = torch.cos(radians), torch.sin(radians)
    # pixel centres measured from the image centre, then less each image's shift: (B, 1, W) and (B, H, 1)
    centre_x = torch.arange(w, device=x.device, dtype=x.dtype) + (0.5 - w / 2)
    centre_y = torch.arange(h, device=x.device, dtype=x.dtype)[:, None] + (0.5 - h / 2)
    out_x = centre_x - shift[:, 0, None, None]
    out_y = centre_y - shift[:, 1, None, None]
    # (in_x, in_y) = out_x * (cos, sin) + out_y * (-sin, cos), in half-widths and half-heights; the small factors
    # are formed first, so only the last sum is over every pixel of every image
    along_x = torch.stack([cos / (w / 2), sin / (h / 2)], dim=1)  # (B, 2, 1, 1)
    along_y = torch.stack([-sin / (w / 2), cos / (h / 2)], dim=1)
    grid = out_x[:, None] * along_x + out_y[:, None] * along_y  # (B, 2, H, W): where each output pixel reads
    grid = grid.permute(0, 2, 3, 1)  # (B, H, W, 2), the layout grid_sample takes (a view, nothing copied)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def augmix_each(images: torch.Tensor, seed: int) -> torch.Tensor:
    """torchvision's ``AugMix(all_ops=False)`` on each uint8 image (B, C, H, W) on its own device, seeded by ``seed``.

    Image by image, because torchvision's AugMix given a batch mixes every image with the same chain of
    operations. It draws from torch's global generators; those are set aside and restored around it, so a seed
    gives the same batch and the rest of the program sees no change.
    """
    from torchvision.transforms import v2

    augmix = v2.AugMix(all_ops=False)
    on_cpu = images.device.type == "cpu"
    devices = [] if on_cpu else [images.device.index or 0]
    with torch.random.fork_rng(devices=devices, device_type=None if on_cpu else images.device.type):
        torch.manual_seed(seed)
        return torch.stack([augmix(image) for image in images])


# ---- A preset on a batch ----------------------------------------------------------------------------------------
class BatchAugment:
    """A preset of :func:`labutils.data.augmentation`, applied to a whole uint8 batch (B, C, H, W) at once.

    ``flips=False`` leaves out the horizontal flips, as :func:`labutils.data.make_loaders` does for digits.
    :meth:`draw` makes every random choice for a batch from ``generator``; :meth:`apply` carries them out on the
    batch's device; calling the object does both.
    """

    def __init__(self, preset: str, *, flips: bool = True):
        if preset not in PRESETS:
            raise ValueError(f"Unknown augmentation preset {preset!r}: choose one of {', '.join(PRESETS)}.")
        self.name = preset
        self.preset = PRESETS[preset] if flips else replace(PRESETS[preset], flip=False)

    def __repr__(self) -> str:
        return f"BatchAugment({self.name!r}, {self.preset})"

    def draw(self, batch_size: int, height: int, width: int, generator: torch.Generator | None = None) -> Draws:
        """Every random choice for ``batch_size`` images of ``height`` x ``width`` pixels, one per image, drawn
        from ``generator`` (None: torch's global one) on the CPU in a fixed order: the same seed, the same draws.
        The distributions are torchvision's: crop corners uniform over 0..2*padding, flips with probability 0.5,
        factors uniform in [1 - jitter, 1 + jitter], a random order, angles uniform in [-degrees, degrees], shifts
        uniform in [-translate * side, translate * side] rounded to whole pixels."""
        p, n, g = self.preset, batch_size, generator
        # a step the preset leaves out draws nothing and gets the values that change nothing
        top = torch.randint(0, 2 * p.padding + 1, (n,), generator=g) if p.padding else torch.zeros(n, dtype=torch.long)
        left = torch.randint(0, 2 * p.padding + 1, (n,), generator=g) if p.padding else torch.zeros(n, dtype=torch.long)
        flip = torch.rand(n, generator=g) < 0.5 if p.flip else torch.zeros(n, dtype=torch.bool)
        if p.jitter:
            factors = torch.empty(n, 3).uniform_(max(0.0, 1 - p.jitter), 1 + p.jitter, generator=g)
            order = torch.rand(n, 3, generator=g).argsort(dim=1)  # a uniformly random permutation per row
        else:
            factors, order = torch.ones(n, 3), torch.arange(3).expand(n, 3)
        angle = torch.empty(n).uniform_(-p.degrees, p.degrees, generator=g) if p.degrees else torch.zeros(n)
        if p.translate:
            max_shift = torch.tensor([p.translate * width, p.translate * height])
            shift = ((torch.rand(n, 2, generator=g) * 2 - 1) * max_shift).round()
        else:
            shift = torch.zeros(n, 2)
        augmix_seed = int(torch.randint(0, 2**62, (), generator=g)) if p.augmix else 0
        return Draws(top, left, flip, factors, order, angle, shift, augmix_seed)

    def apply(self, images: torch.Tensor, draws: Draws) -> torch.Tensor:
        """The augmented batch: uint8 (B, C, H, W) in, uint8 (B, C, H, W) out, on the device of ``images``."""
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(
                f"BatchAugment takes a uint8 batch of shape (B, C, H, W), not {images.dtype} of shape "
                f"{tuple(images.shape)}."
            )
        p, device = self.preset, images.device
        x = images
        if p.padding or p.flip:
            x = crop_and_flip(x, draws.top.to(device), draws.left.to(device), draws.flip.to(device), p.padding)
        if p.jitter or p.degrees or p.translate:
            x = x.float()
            if p.jitter:
                x = color_jitter(x, draws.factors.to(device), draws.order.to(device))
            if p.degrees or p.translate:
                x = rotate_and_shift(x, draws.angle.to(device), draws.shift.to(device))
            x = x.to(torch.uint8)  # whole values 0..255 already: the conversion is exact
        if p.augmix:
            x = augmix_each(x, draws.augmix_seed)
        return x.contiguous()

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.apply(images, self.draw(len(images), images.shape[-2], images.shape[-1], generator))


# ---- A training loader that keeps the images on the device --------------------------------------------------------
def fits_on_device(nbytes: int, device: torch.device) -> bool:
    """Whether ``nbytes`` of images may stay on ``device``: on CUDA when they take at most a quarter of the free
    memory (the rest is for the model, its activations and the augmented batches); elsewhere always (the CPU
    holds them anyway; Apple's GPU shares the CPU's memory)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return nbytes <= free // 4
    return True


class DeviceLoader:
    """Shuffled training batches ``(x, y)`` of normalised float32 images (B, C, H, W) and int64 labels (B,), made on
    ``device`` from uint8 ``images`` (N, C, H, W) kept there, each batch augmented at once by ``augment``.

    ``images`` and ``labels`` are NumPy arrays or tensors. The images move to the device once (if they do not fit,
    see :func:`fits_on_device`, they stay in CPU memory and each uint8 batch is copied over). One seeded
    ``generator`` draws the order of every epoch and every augmentation, so a seed gives the same batches, and
    checkpoints save and restore it with the DataLoaders'.
    The last batch may be smaller, as with a DataLoader.
    """

    def __init__(
        self,
        images,
        labels,
        mean,
        std,
        augment: BatchAugment | None,
        *,
        batch_size: int,
        device,
        seed: int = 0,
        shuffle: bool = True,
    ):
        images = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images))
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(
                f"DeviceLoader takes uint8 images of shape (N, C, H, W), not {images.dtype} of shape "
                f"{tuple(images.shape)}."
            )
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} is not possible: use a positive integer.")
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.images = images.to(self.device) if fits_on_device(images.numel(), self.device) else images.cpu()
        self.labels = torch.as_tensor(labels, dtype=torch.long).to(self.device)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.augment = augment
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __iter__(self):
        n = len(self.labels)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for start in range(0, n, self.batch_size):
            index = order[start : start + self.batch_size]
            x = self.images.index_select(0, index.to(self.images.device)).to(self.device, non_blocking=True)
            if self.augment is not None:
                x = self.augment(x, self.generator)
            x = x.float().div_(255.0).sub_(self.mean).div_(self.std)  # as ImageArrayDataset normalises
            yield x, self.labels.index_select(0, index.to(self.device))
