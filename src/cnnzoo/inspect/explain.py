"""What a network looks at: feature maps of its stages and Grad-CAM.

Grad-CAM (Selvaraju et al. 2016, 'Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization', arXiv 1610.02391, Eq. 1-2): weight each channel of a late feature
map by the spatial mean of the class score's gradient, sum, keep the positive part, and upsample
to the image. Both work on any model through ``feature_info`` and forward hooks.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..errors import DataError


def load_image(path: str | Path, model: nn.Module) -> tuple[Image.Image, torch.Tensor]:
    """The image as the user gave it, and the normalised tensor the model takes (1, C, H, W).

    The whole image is resized to the model's input (no centre crop), so a heat map computed on
    the tensor lies exactly over the picture when scaled back.
    """
    cfg = model.default_cfg
    try:
        image = Image.open(path)
        image.load()
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from None
    chans, h, w = cfg.input_size
    image = image.convert("L" if chans == 1 else "RGB")
    resized = image.resize((w, h), Image.Resampling.BILINEAR)
    x = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0)
    x = x[None] if x.ndim == 2 else x.permute(2, 0, 1)
    mean = torch.tensor(cfg.mean[:chans]).view(-1, 1, 1)
    std = torch.tensor(cfg.std[:chans]).view(-1, 1, 1)
    return image, ((x - mean) / std)[None]


def feature_maps(model: nn.Module, x: torch.Tensor, modules: list[str]) -> dict[str, torch.Tensor]:
    """The outputs of ``modules`` (readable names) for input ``x``."""
    found: dict[str, torch.Tensor] = {}
    handles = [model.get_submodule(name).register_forward_hook(
        lambda _m, _i, out, name=name: found.setdefault(name, out.detach().clone()))
        for name in modules]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return found


def grad_cam(model: nn.Module, x: torch.Tensor, layer: str | None = None,
             class_idx: int | None = None) -> tuple[torch.Tensor, int, float]:
    """(heat map in [0, 1] of x's height and width, class explained, its softmax probability).

    ``layer`` defaults to the deepest map of ``feature_info``; ``class_idx`` to the top class.
    """
    layer = layer or model.feature_info[-1]["module"]
    saved: dict[str, torch.Tensor] = {}
    handle = model.get_submodule(layer).register_forward_hook(
        lambda _m, _i, out: saved.setdefault("act", out))
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            logits = model(x.clone().requires_grad_(True))
            if class_idx is None:
                class_idx = int(logits[0].argmax())
            if not 0 <= class_idx < logits.shape[1]:
                raise DataError(f"class {class_idx} out of range: the model has "
                                f"{logits.shape[1]} classes")
            act = saved["act"]
            grads, = torch.autograd.grad(logits[0, class_idx], act)
    finally:
        handle.remove()
        model.train(was_training)
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * act).sum(dim=1, keepdim=True)).detach()
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    cam = cam - cam.min()
    if cam.max() > 0:
        cam = cam / cam.max()
    prob = float(logits.detach().softmax(1)[0, class_idx])
    return cam, class_idx, prob


def resize_map(cam: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """A heat map scaled to an image's (width, height)."""
    w, h = size
    out = F.interpolate(cam[None, None], size=(h, w), mode="bilinear", align_corners=False)
    return out[0, 0].clamp(0, 1).numpy()


def save_overlay(image: Image.Image, heat: np.ndarray, path: str | Path, title: str = "") -> None:
    """The image under the heat map (jet), opaque where the map is hot, as in the paper."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w, h = image.size
    fig = plt.figure(figsize=(6, 6 * h / w + (0.4 if title else 0)), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1 if not title else 0.93))
    ax.imshow(image, cmap="gray" if image.mode == "L" else None)
    # Cold regions stay see-through so the picture under them remains readable.
    ax.imshow(heat, cmap="jet", alpha=np.clip(0.1 + 0.55 * heat, 0, 1), vmin=0, vmax=1)
    ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.savefig(path)
    plt.close(fig)


def save_grid(fmap: torch.Tensor, path: str | Path, title: str = "", max_maps: int = 32) -> int:
    """The most active channels of a (1, C, H, W) map as a grid of small images; returns how many."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    maps = fmap[0].float()
    order = maps.mean(dim=(1, 2)).argsort(descending=True)[:max_maps]
    n = len(order)
    cols = min(8, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols, 1.4 * rows + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, c in zip(axes.flat, order.tolist()):
        ax.imshow(maps[c].numpy(), cmap="viridis")
        ax.set_title(f"ch {c}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return n
