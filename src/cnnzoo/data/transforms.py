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
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2

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
