"""Transforms from a model's ``default_cfg``: size, mean/std, interpolation, crop, channels.

Evaluation resizes to ``size / crop_pct`` and centre-crops ``size``, the ImageNet protocol every
reference table uses. Training augments as the papers did for each kind of image: photos get a
random-resized crop and a horizontal flip (Szegedy et al. 2015, the standard since), digit glyphs
a small random affine (LeCun et al. 1998 trained on distorted copies; a flip would turn digits
into other symbols).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2

try:  # private to torchvision: without them, DirectCompose is not used and v2 runs as it is
    from torchvision.transforms.v2._transform import _RandomApplyTransform
    from torchvision.transforms.v2._utils import check_type
except ImportError:  # pragma: no cover - another torchvision's layout
    _RandomApplyTransform = check_type = None

_INTERPOLATION = {
    "nearest": InterpolationMode.NEAREST,
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
}


class AdaptChannels(torch.nn.Module):
    """Grey -> RGB by repeating the channel, RGB -> grey by luminance, so any data fits any model."""

    def __init__(self, in_chans: int):
        super().__init__()
        self.in_chans = in_chans

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[-3]
        if c == self.in_chans:
            return x
        if c == 1:
            return x.expand(*x.shape[:-3], self.in_chans, *x.shape[-2:]).clone()
        grey = v2.functional.rgb_to_grayscale(x[..., :3, :, :], num_output_channels=1)
        return grey.expand(*x.shape[:-3], self.in_chans, *x.shape[-2:]).clone()


def _fit(stats: Sequence[float], in_chans: int) -> list[float]:
    # ImageNet statistics on a one-channel model (or the reverse) use their mean value.
    stats = list(stats)
    if len(stats) == in_chans:
        return stats
    return [sum(stats) / len(stats)] * in_chans


def build_transform(cfg, *, train: bool, kind: str, augment: bool = True) -> v2.Compose:
    """Raw image (PIL or uint8 tensor) -> normalised float tensor ``in_chans x H x W``."""
    in_chans, h, w = cfg.input_size
    interp = _INTERPOLATION.get(cfg.interpolation, InterpolationMode.BILINEAR)
    steps: list = [v2.ToImage()]
    if train and augment and kind == "photo":
        steps += [v2.RandomResizedCrop((h, w), interpolation=interp, antialias=True),
                  v2.RandomHorizontalFlip()]
    elif kind == "photo":
        scale = int(round(min(h, w) / cfg.crop_pct))
        steps += [v2.Resize(scale, interpolation=interp, antialias=True), v2.CenterCrop((h, w))]
    else:
        # Glyphs fill their frame; cropping would cut strokes, so they are resized whole.
        steps += [v2.Resize((h, w), interpolation=interp, antialias=True)]
        if train and augment:
            steps += [v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1),
                                      interpolation=InterpolationMode.BILINEAR)]
    steps += [v2.ToDtype(torch.float32, scale=True), AdaptChannels(in_chans),
              v2.Normalize(_fit(cfg.mean, in_chans), _fit(cfg.std, in_chans))]
    return v2.Compose(steps)


class BatchAffine(torch.nn.Module):
    """The digit augmentation of ``build_transform`` (rotation, shift, scale) on a whole batch.

    In-memory glyph sets are transformed once and augmented here, on the batch and the device,
    which makes a LeNet-5 epoch on CPU several times faster than per-image transforms. The
    border is replicated: glyphs sit on a plain background.
    """

    def __init__(self, degrees: float = 10.0, translate: float = 0.1,
                 scale: tuple[float, float] = (0.9, 1.1)):
        super().__init__()
        self.degrees, self.translate, self.scale = degrees, translate, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        angle = (torch.rand(n) * 2 - 1) * self.degrees * torch.pi / 180
        scale = torch.empty(n).uniform_(*self.scale)
        shift = (torch.rand(n, 2) * 2 - 1) * self.translate * 2  # grid coordinates span 2
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                             torch.stack([sin, cos, shift[:, 1]], 1)], 1).to(x)
        grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
        return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border",
                                               align_corners=False)


# v2 steps whose forward, on one image, is ``transform(x, make_params([x]))`` (after a coin
# flip for the random ones) and whose kernels treat a plain tensor as an image.
_DIRECT = (v2.ToImage, v2.Resize, v2.CenterCrop, v2.RandomResizedCrop, v2.RandomHorizontalFlip,
           v2.RandomVerticalFlip, v2.RandomAffine, v2.Normalize, v2.ToDtype)


def _direct(step) -> bool:
    if type(step) not in _DIRECT or not all(
            hasattr(step, a) for a in ("make_params", "transform", "_transformed_types")):
        return False
    # A per-type dtype treats plain tensors apart from images; one dtype treats them alike.
    return not isinstance(step, v2.ToDtype) or isinstance(step.dtype, torch.dtype)


class DirectCompose:
    """``compose(image)`` for one image, at less cost per image: the same values, drawing the
    same random numbers in the same order.

    A v2 step's ``forward`` flattens its inputs, sorts out which of them to transform and
    re-wraps each result as a ``tv_tensors.Image``; for a single image that is most of the cost
    of a small one. Here each known step runs its own ``make_params`` and ``transform`` on a
    plain tensor (which v2 treats as the image when it is the only input, through the same
    kernels); any other step, or an nn.Module such as :class:`AdaptChannels`, is called as
    usual. Outputs are plain tensors.

    Measured on the 28x28 JPEGs of ``bench/data_pipeline.py`` (LeNet-5's training transform:
    ToImage, RandomResizedCrop, flip, ToDtype, AdaptChannels, Normalize; min of 5 x 2,000
    calls, 2-core EPYC, loaded): 597 -> 496 us an image in training, 411 -> 269 us in
    evaluation (Resize, CenterCrop, ...).
    """

    def __init__(self, steps: Sequence):
        self.steps = [(step, _direct(step), isinstance(step, _RandomApplyTransform))
                      for step in steps]

    def __call__(self, image):
        x = image
        for step, known, coin in self.steps:
            if not known:
                x = step(x)
                continue
            step.check_inputs([x])
            if coin and torch.rand(1) >= step.p:
                continue
            if check_type(x, step._transformed_types):
                x = step.transform(x, step.make_params([x]))
                if isinstance(x, tv_tensors.TVTensor):
                    x = x.as_subclass(torch.Tensor)
        return x


def direct(transform):
    """:class:`DirectCompose` of a v2 ``Compose``; any other transform as it is."""
    if check_type is None or type(transform) is not v2.Compose:
        return transform
    return DirectCompose(transform.transforms)


def _per_pixel(step) -> bool:
    return type(step) in (v2.Normalize, AdaptChannels) or (
        type(step) is v2.ToDtype and isinstance(step.dtype, torch.dtype))


def split_tail(transform) -> tuple:
    """``(head, tail)``: ``tail(stack(head(x) for x in xs))`` holds ``transform(x)`` of each
    ``x``, bit for bit, or ``(transform, None)`` where there is no such split.

    The tail is the run of steps at the end that map each pixel on its own and draw no random
    number (dtype, channels, normalisation): on a batch they cost one call instead of one an
    image. LeNet-5's on 64 images of 3x32x32 (ToDtype, AdaptChannels, Normalize; min of
    5 x 20, 2-core EPYC, loaded): 89.5 us an image one by one, 2.7 us on the batch; outputs
    compared equal for 1 and 3 channels at 7 to 299 pixels.
    """
    if not isinstance(transform, DirectCompose):
        return transform, None
    steps = [step for step, _, _ in transform.steps]
    n = len(steps)
    while n and _per_pixel(steps[n - 1]):
        n -= 1
    if n in (0, len(steps)):
        return transform, None
    return DirectCompose(steps[:n]), DirectCompose(steps[n:])
