"""Freezing a backbone up to a named stage, for transfer learning.

``--freeze stages.2`` freezes every parameter registered before and inside ``stages.2`` (modules
are registered input to output in every family), ``--freeze all-but-head`` everything but the
classifier. Norm layers inside the frozen part are kept in eval mode, so their running
statistics stay those of the pretrained network (what "frozen" means to a fine-tuner).
"""
from __future__ import annotations

from torch import nn

from ..errors import CnnzooError


def _classifier_prefix(model: nn.Module) -> str:
    cfg = getattr(model, "default_cfg", None)
    return (getattr(cfg, "classifier", None) or "head.fc").rsplit(".", 1)[0]


def freeze(model: nn.Module, upto: str) -> list[str]:
    """Freeze parameters up to and including module ``upto``; returns the frozen names."""
    names = [n for n, _ in model.named_parameters()]
    if upto == "all-but-head":
        head = _classifier_prefix(model)
        frozen = [n for n in names if not n.startswith(head + ".")]
    else:
        modules = dict(model.named_modules())
        if upto not in modules or upto == "":
            tops = [n for n, _ in model.named_children()]
            stages = [n for n in modules if n.count(".") == 1 and n.split(".")[0] in
                      ("stages", "features", "layers")]
            raise CnnzooError(f"--freeze {upto!r} is not a module of {getattr(model, 'model_name', 'the model')}"
                              f"; try all-but-head or one of: {', '.join((stages or tops)[:12])}")
        inside = [i for i, n in enumerate(names) if n.startswith(upto + ".")]
        if not inside:
            raise CnnzooError(f"--freeze {upto!r} has no parameters to freeze")
        frozen = names[:inside[-1] + 1]
    keep = set(frozen)
    for n, p in model.named_parameters():
        p.requires_grad_(n not in keep)
    return frozen


def unfreeze(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(True)


def set_train_mode(model: nn.Module, train: bool) -> None:
    """``model.train(train)``, but norm layers whose parameters are all frozen stay in eval."""
    model.train(train)
    if not train:
        return
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._NormBase):
            params = list(m.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                m.eval()


def counts(model: nn.Module) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return trainable, frozen
