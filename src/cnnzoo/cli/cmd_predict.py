"""`cnnzoo predict MODEL --weights W IMAGE...`: the top-k classes of each image, with names."""
from __future__ import annotations

import argparse
import json

from ..errors import CnnzooError
from ._types import positive_int

NAME = "predict"
HELP = "top-k classes of image files, with the class names of the run that trained the model"
ORDER = 50


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("images", nargs="+", metavar="IMAGE")
    add_weights_options(p)
    p.add_argument("-k", "--top-k", type=positive_int, default=5)
    p.add_argument("--img-size", type=positive_int, help="input side, for a bare weights file")
    add_backend_options(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")


MODEL_HELP = ("a registered name (with --weights or --pretrained), a saved-model or training run "
              "folder, or hf-hub:ORG/NAME[@REVISION]")


def add_weights_options(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--weights", help="the trained weights of a registered MODEL: a run folder, "
                                       "its checkpoint, a saved model, or a .safetensors/.pth/"
                                       ".h5 file")
    src.add_argument("--pretrained", metavar="SOURCE",
                     help="a pretrained source for a registered MODEL ('torchvision', 'timm', "
                          "'keras', a file or a URL)")


def add_backend_options(p: argparse.ArgumentParser) -> None:
    """What runs the model, for predict and eval alike."""
    p.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch",
                   help="onnxruntime: run the model exported to ONNX, BatchNorm folded (CPU)")
    p.add_argument("--channels-last", action="store_true",
                   help="NHWC layout (torch backend): faster on most CPUs and GPUs")


def check_backend_options(args: argparse.Namespace) -> None:
    # Before any model is built or data read: a contradiction costs the user nothing.
    if args.channels_last and args.backend == "onnxruntime":
        raise CnnzooError("--channels-last is a torch layout; ONNX Runtime picks its own")


def load_model(args: argparse.Namespace, *, trained: bool = True):
    """``(model, Resolved)`` for MODEL and its --weights/--pretrained, through the one resolver;
    ``trained`` refuses a bare registered name, whose random weights predict nothing."""
    from ..registry import is_model
    from ..resolve import load

    weights, pretrained = getattr(args, "weights", None), getattr(args, "pretrained", None)
    if trained and is_model(args.model) and not (weights or pretrained):
        raise CnnzooError(f"{args.model} is an untrained architecture: give --weights or "
                          f"--pretrained, or a saved model, run folder or hf-hub: source")
    return load(args.model, weights=weights, pretrained=pretrained,
                img_size=getattr(args, "img_size", None))


def run(args: argparse.Namespace) -> int:
    from ..data import build_transform
    from ..data.images import shown
    from ..engine.predict import class_names, open_image, predict

    if args.top_k < 1:
        raise CnnzooError(f"--top-k must be at least 1, got {args.top_k}")
    check_backend_options(args)
    images = [open_image(p) for p in args.images]
    model, resolved = load_model(args)
    config = resolved.run_config
    cfg = model.default_cfg
    kind = (config or {}).get("data_kind") or ("digits" if cfg.input_size[0] == 1 else "photo")
    transform = build_transform(cfg, train=False, kind=kind)
    names = list(cfg.label_names) if cfg.label_names else class_names(cfg.num_classes, config)
    if args.backend == "onnxruntime":
        from ..perf.optimize import onnxruntime_model
        model = onnxruntime_model(model, model.model_name)
    results = predict(model, images, transform, k=args.top_k, channels_last=args.channels_last)
    if args.json:
        print(json.dumps([{"image": path, "top": [{"class": names[i], "index": i, "prob": p}
                                                  for i, p in top]}
                          for path, top in zip(args.images, results)], indent=2))
        return 0
    for path, top in zip(args.images, results):
        print(shown(path))  # a file name that is not UTF-8 still prints
        for rank, (i, p) in enumerate(top, start=1):
            print(f"  {rank}. {names[i]:<24} {100 * p:6.2f}%")
    return 0
