"""Scoring a model: loss, top-1/top-5, per-class accuracy, the confusion matrix and its picture."""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .distributed import DistInfo, all_sum_tensor


@dataclass
class EvalResult:
    loss: float
    top1: float  # percent
    top5: float
    count: int
    confusion: torch.Tensor = field(repr=False)  # [true, predicted] counts

    @property
    def per_class(self) -> list[float | None]:
        totals = self.confusion.sum(1)
        return [float(100 * self.confusion[i, i] / t) if t else None
                for i, t in enumerate(totals.tolist())]


def logits_of(output):
    """Main logits of a model output: a tensor, or a (Named)tuple with ``logits`` first."""
    if isinstance(output, torch.Tensor):
        return output
    return getattr(output, "logits", output[0])


def autocast(device: torch.device, amp: str | None):
    if not amp or amp == "none":
        return nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def evaluate(model: nn.Module, loader, num_classes: int, *, device: torch.device,
             dist_info: DistInfo | None = None, amp: str | None = None,
             channels_last: bool = False) -> EvalResult:
    """Scores every image once; under DDP each rank scores its shard and the sums are reduced.

    Each batch's sums stay on the device and are read once at the end: reading them batch by
    batch would make the host wait for the device before it can queue the next batch.
    """
    model.eval()
    losses, hits5, labels_seen, preds = [], [], [], []
    k = min(5, num_classes)
    for images, labels in loader:
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = labels.to(device)
        with autocast(device, amp):
            logits = logits_of(model(images)).float()
        losses.append(F.cross_entropy(logits, labels, reduction="sum"))
        hits5.append((logits.topk(k, 1).indices == labels[:, None]).any(1).sum())
        labels_seen.append(labels)
        preds.append(logits.argmax(1))
    # Python floats are float64: the batch sums add up in batch order as they always did.
    loss_sum = torch.tensor(sum(torch.stack(losses).tolist()) if losses else 0.0,
                            dtype=torch.float64)
    top5 = torch.tensor(float(sum(torch.stack(hits5).tolist())) if hits5 else 0.0,
                        dtype=torch.float64)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    if labels_seen:
        pairs = (torch.cat(labels_seen) * num_classes + torch.cat(preds)).cpu()
        confusion += torch.bincount(pairs, minlength=num_classes ** 2).view(num_classes,
                                                                            num_classes)
    if dist_info is not None:
        loss_sum = all_sum_tensor(dist_info, loss_sum)
        top5 = all_sum_tensor(dist_info, top5)
        confusion = all_sum_tensor(dist_info, confusion)
    n = int(confusion.sum())
    correct = int(confusion.diag().sum())
    return EvalResult(loss=float(loss_sum) / max(1, n), top1=100 * correct / max(1, n),
                      top5=100 * float(top5) / max(1, n), count=n, confusion=confusion)


def plot_confusion(result: EvalResult, classes: list[str], path: Path, title: str = "") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..weights.io import atomic_write

    n = len(classes)
    size = min(16, 3 + 0.35 * n)
    fig, ax = plt.subplots(figsize=(size, size))
    cm = result.confusion.float()
    norm = cm / cm.sum(1, keepdim=True).clamp(min=1)
    ax.imshow(norm.numpy(), cmap="Blues", vmin=0, vmax=1)
    if n <= 30:
        ax.set_xticks(range(n), classes, rotation=90, fontsize=8)
        ax.set_yticks(range(n), classes, fontsize=8)
        if n <= 15:
            for i in range(n):
                for j in range(n):
                    if cm[i, j]:
                        ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                                color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"top-1 {result.top1:.2f}% on {result.count} images")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
