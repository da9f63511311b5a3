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
    p.add_argument("model", help="registered model name")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", help="a run folder, its checkpoint, or a .safetensors/.pth file")
    src.add_argument("--pretrained", metavar="SOURCE", help="a pretrained source for create_model")
    p.add_argument("-k", "--top-k", type=positive_int, default=5)
    p.add_argument("--img-size", type=positive_int, help="input side, for a bare weights file")
    add_backend_options(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")


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


def load_model(args: argparse.Namespace):
    """(model, run config or None) from --weights (run or file) or --pretrained."""
    from ..engine.build import (classifier_classes, load_run_model, model_kwargs,
                                resolve_weights, run_of, with_input_size)
    from ..registry import create_model
    from ..weights import load_pretrained
    from ..weights.io import load_state_dict

    kwargs = model_kwargs(args.model, args.img_size)
    if args.pretrained:
        model = create_model(args.model, pretrained=args.pretrained, **kwargs)
        return with_input_size(model, args.img_size), None
    weights = resolve_weights(args.weights)
    run = run_of(weights)
    if run is not None:
        model, config = load_run_model(run, weights)
        if config["train"]["model"] != args.model:
            raise CnnzooError(f"{run} holds a {config['train']['model']}, not a {args.model}")
        return model, config
    state = load_state_dict(weights)
    num_classes = classifier_classes(state, args.model)
    model = create_model(args.model, num_classes=num_classes, **kwargs)
    # Through the shared loader, so a torchvision- or timm-named file works as well as ours.
    load_pretrained(model, state, name=args.model)
    return with_input_size(model, args.img_size), None


def run(args: argparse.Namespace) -> int:
    from ..data import build_transform
    from ..data.images import shown
    from ..engine.predict import class_names, open_image, predict

    if args.top_k < 1:
        raise CnnzooError(f"--top-k must be at least 1, got {args.top_k}")
    check_backend_options(args)
    images = [open_image(p) for p in args.images]
    model, config = load_model(args)
    cfg = model.default_cfg
    kind = (config or {}).get("data_kind") or ("digits" if cfg.input_size[0] == 1 else "photo")
    transform = build_transform(cfg, train=False, kind=kind)
    names = class_names(cfg.num_classes, config)
    if args.backend == "onnxruntime":
        from ..perf.onnxrt import onnxruntime_model
        model = onnxruntime_model(model, args.model)
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
