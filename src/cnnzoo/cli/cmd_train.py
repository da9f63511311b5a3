"""`cnnzoo train MODEL --data DATA`: train into a run folder; `--resume RUN` continues one.

Runs unchanged under `torchrun --nproc_per_node N` (DistributedDataParallel, rank-0 output).
"""
from __future__ import annotations

import argparse
import time
from dataclasses import fields
from pathlib import Path

from ..errors import CnnzooError
from ._types import positive_int

NAME = "train"
HELP = "train a model on a dataset (digits, mnist, cifar10, a folder...) into a run folder"
ORDER = 40


def _float_or_none(text: str):
    return None if text.lower() == "none" else float(text)


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", help="registered model name (`cnnzoo list`)")
    p.add_argument("--data", default=None,
                   help="digits (default, offline), mnist, fashion-mnist, cifar10, cifar100, "
                        "flowers102, a folder of class sub-folders (or of train/ and val/ or "
                        "test/ folders of them), a folder of MNIST IDX files, or WebDataset "
                        "shards ('train-{0000..0146}.tar' or a folder of .tar)")
    p.add_argument("--val-data", metavar="SOURCE",
                   help="score held-out images from SOURCE (any kind of DATA; its own held-out "
                        "split where it has one, else all of it)")
    p.add_argument("--data-root", help="where torchvision datasets live (default "
                                       "~/.cache/cnnzoo/data or $CNNZOO_DATA)")
    p.add_argument("--download", action="store_true", help="download a torchvision dataset")
    p.add_argument("-o", "--output", help="run folder (default runs/MODEL-DATA-TIME)")
    p.add_argument("--force", action="store_true", help="overwrite an existing run folder")
    p.add_argument("--resume", metavar="RUN", help="continue the run in this folder exactly")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int)
    g.add_argument("-b", "--batch-size", type=int, help="global batch size (default 64)")
    g.add_argument("--lr", type=float, help="peak learning rate (default per optimizer)")
    g.add_argument("--opt", choices=("sgd", "adamw", "rmsprop"))
    g.add_argument("--momentum", type=float)
    g.add_argument("--nesterov", action="store_true", default=None)
    g.add_argument("--wd", "--weight-decay", dest="weight_decay", type=float)
    g.add_argument("--sched", choices=("constant", "step", "cosine", "onecycle"))
    g.add_argument("--warmup-epochs", type=float)
    g.add_argument("--step-epochs", type=int, help="step schedule: epochs between decays")
    g.add_argument("--label-smoothing", type=float)
    g.add_argument("--clip-grad", type=float, help="clip the gradient norm to this value")
    g.add_argument("--ema", dest="ema_decay", type=float, metavar="DECAY",
                   help="keep an exponential moving average of the weights (e.g. 0.999)")
    g = p.add_argument_group("data")
    g.add_argument("--val-split", type=float, metavar="F",
                   help="hold out a seeded fraction F (default: the source's test split, else 0.2)")
    g.add_argument("--img-size", type=int, help="input side (default: the model's)")
    g.add_argument("--in-chans", type=int, help="input channels (default: the model's)")
    g.add_argument("--no-augment", dest="augment", action="store_false", default=None)
    g.add_argument("--workers", type=int,
                   help="data loading processes (default: min(cores, 8) for photos and shards, "
                        "0 for in-memory digits)")
    g.add_argument("--check-images", action="store_true", default=None,
                   help="decode every image before training, in parallel, and leave out those "
                        "that fail (by default they are found, skipped and named as they are read)")
    g.add_argument("--skip-bad-shards", action="store_true", default=None,
                   help="skip and count truncated or corrupt shards instead of stopping")
    g.add_argument("--limit-batches", type=int, help="train on N batches per epoch (smoke runs)")
    g.add_argument("--save-every", type=int, metavar="STEPS",
                   help="also checkpoint every STEPS steps inside an epoch (default: epoch ends "
                        "only); Ctrl-C and SIGTERM always save before stopping")
    g = p.add_argument_group("transfer learning")
    g.add_argument("--pretrained", help="weights to start from: a .safetensors/.pth file or a run")
    g.add_argument("--freeze", metavar="MODULE",
                   help="freeze up to this module (e.g. stages.2) or 'all-but-head'")
    g.add_argument("--unfreeze-at", type=int, metavar="EPOCH",
                   help="train everything from this epoch on")
    g = p.add_argument_group("speed and reproducibility")
    g.add_argument("--amp", choices=("none", "bf16", "fp16"))
    g.add_argument("--channels-last", action="store_true", default=None)
    g.add_argument("--compile", action="store_true", default=None)
    g.add_argument("--plain", dest="train_speedups", action="store_false", default=None,
                   help="train the model as built: no conv twins or NHWC (cnnzoo.for_training)")
    g.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    g.add_argument("--threads", type=positive_int,
                   help="CPU threads for torch (1 is fastest for models as small as LeNet-5)")
    g.add_argument("--seed", type=int)
    g.add_argument("--deterministic", action="store_true", default=None,
                   help="deterministic kernels (bit-exact resume on CPU)")


def config_from_args(args: argparse.Namespace, base: dict | None = None):
    from ..engine.build import TrainConfig

    values = dict(base or {})
    for f in fields(TrainConfig):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = v
    if not values.get("model"):
        raise CnnzooError("name a model to train (`cnnzoo list` shows them) or --resume RUN")
    return TrainConfig.from_dict(values)


def run(args: argparse.Namespace) -> int:
    from ..engine.distributed import setup, teardown
    from ..engine.run_dir import require_run
    from ..engine.trainer import train
    from ..registry import is_model

    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    resume = args.resume is not None
    if resume:
        run_dir = Path(args.resume)
        stored = require_run(run_dir)["train"]
        if args.model and args.model != stored["model"]:
            raise CnnzooError(f"{run_dir} trains {stored['model']}, not {args.model}")
        changed = [f for f in ("data", "val_data", "lr", "opt", "batch_size", "seed", "sched")
                   if getattr(args, f, None) is not None and getattr(args, f) != stored.get(f)]
        if changed:
            raise CnnzooError(f"--resume continues the run as configured; drop "
                              f"{', '.join('--' + c.replace('_', '-') for c in changed)}")
        cfg = config_from_args(argparse.Namespace(epochs=args.epochs,
                                                  save_every=args.save_every), stored)
    else:
        cfg = config_from_args(args)
        if not is_model(cfg.model):
            from ..registry import model_card
            model_card(cfg.model)  # raises the registry's error with close names
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = Path(args.output or f"runs/{cfg.model}-{Path(cfg.data).name}-{stamp}")
    dist = setup(cfg.device)
    try:
        result = train(cfg, run_dir, dist, resume=resume, force=args.force)
    finally:
        teardown(dist)
    if dist.is_main:
        print(f"held-out accuracy: {result['val_acc']:.2f}% top-1 on {result['val_count']} images "
              f"(best {result['best_acc']:.2f}%); run folder: {run_dir}")
    return 0
