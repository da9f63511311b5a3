"""`cnnzoo eval MODEL --weights W [--data DATA]`: top-1, top-5, loss, per-class accuracy and a
confusion-matrix picture. Given a run, it scores the run's own held-out images by default."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import CnnzooError
from ._int8 import add_int8_options
from ._types import positive_int
from .cmd_predict import MODEL_HELP, add_backend_options

NAME = "eval"
HELP = "evaluate weights on a dataset: top-1/top-5, loss, per-class accuracy, confusion matrix"
ORDER = 45


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--weights",
                   help="the trained weights of a registered MODEL: a run folder, its "
                        "checkpoint, a saved model, or a .safetensors/.pth/.h5 file")
    p.add_argument("--pretrained", metavar="SOURCE",
                   help="a pretrained source for a registered MODEL ('torchvision', 'timm', "
                        "'keras', a file or a URL)")
    p.add_argument("--data", help="dataset (default: the run's, scoring its held-out images)")
    p.add_argument("--split", choices=("held-out", "test"), default="held-out",
                   help="held-out: the run's held-out images (its split, val/ folder or "
                        "--val-data), or DATA's own held-out split; test: DATA's test/ folder")
    p.add_argument("--data-root")
    p.add_argument("--download", action="store_true")
    p.add_argument("--img-size", type=positive_int, help="input side, for a bare weights file")
    p.add_argument("-b", "--batch-size", type=positive_int, default=128)
    p.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none")
    p.add_argument("--optimize", action="store_true",
                   help="score through cnnzoo.optimize (torch backend): BatchNorm folded, on a "
                        "CPU convs fused for oneDNN, layout and slices measured on the first "
                        "batch; with --amp, bf16 or fp16 on weights cast once where faster")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    add_backend_options(p)
    add_int8_options(p, "with --int8: calibrate on this many training images of the run (or of "
                        "DATA), never the ones scored (default 256)")
    p.add_argument("-o", "--confusion", metavar="PNG",
                   help="confusion-matrix picture (default: confusion-DATA.png in the run folder, "
                        "else in the current folder)")
    p.add_argument("--force", action="store_true", help="overwrite an existing picture")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _dataset(args, config: dict | None, model):
    """The images to score: the run's held-out images when DATA is the run's own data."""
    from ..data import build_transform, eval_view, held_out_set, load_source
    from ..engine.run_dir import read_split

    train_cfg = (config or {}).get("train", {})
    data = args.data or train_cfg.get("data")
    if data is None:
        raise CnnzooError("--data is needed with a bare weights file")

    def load(spec, held_out=False):
        return load_source(spec, root=args.data_root or train_cfg.get("data_root"),
                           download=args.download, held_out=held_out)

    val_data = train_cfg.get("val_data") if args.data is None and args.split != "test" else None
    if val_data:
        source = load(val_data, held_out=True)
        tf = build_transform(model.default_cfg, train=False, kind=source.kind)
        held = held_out_set(source, config["classes"])
        source.classes = config["classes"]
        return source, eval_view(held, None, tf), "held-out images of the run (--val-data)"
    source = load(data)
    tf = build_transform(model.default_cfg, train=False, kind=source.kind)
    if args.split == "test":
        if source.test is None:
            raise CnnzooError(f"{source.spec} has no test/ folder of class folders to score")
        return source, eval_view(source.test, None, tf), "test/ folder"
    split = read_split(Path(args.run)) if args.run and data == train_cfg.get("data") else None
    if split is not None:
        return source, eval_view(source.train, split, tf), "held-out split of the run"
    if source.val is not None:
        name = f"{source.val_name}/ folder" if source.val_name else "test split"
        return source, eval_view(source.val, None, tf), name
    return source, eval_view(source.train, None, tf), "all images"


def _int8(args, config: dict | None, model):
    """The model quantized on ``--calib`` training images: the run's own training data, less
    its held-out split, or DATA's training part (never its val/ or test/ folder)."""
    from ..data import load_source
    from ..engine.run_dir import read_split
    from ..perf.quantize import quantize
    from ._int8 import calibration_loader

    train_cfg = (config or {}).get("train", {})
    data = train_cfg.get("data") or args.data
    source = load_source(data, root=args.data_root or train_cfg.get("data_root"),
                         download=args.download)
    held = read_split(Path(args.run)) if args.run and data == train_cfg.get("data") else None
    loader = calibration_loader(source, model.default_cfg, args.calib, held_out=held)
    backend = None if args.int8_backend == "auto" else args.int8_backend
    return quantize(model, loader, limit=args.calib, backend=backend)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..data import make_loader
    from ..engine.distributed import setup
    from ..engine.evaluate import evaluate, plot_confusion
    from ..engine.predict import class_names
    from .cmd_predict import check_backend_options, load_model

    ort = args.backend == "onnxruntime"
    # ONNX Runtime's CPU build in float32, as `optimize` hands it models too.
    if ort and (args.amp != "none" or (args.device or "cpu").split(":")[0] != "cpu"):
        raise CnnzooError("--backend onnxruntime runs on the CPU in float32: "
                          "use --device cpu and no --amp")
    check_backend_options(args)
    if ort and args.optimize:
        raise CnnzooError("--optimize is for the torch backend (ONNX Runtime folds BatchNorm "
                          "and lays out its tensors itself)")
    if args.int8 and (ort or args.optimize or args.amp != "none" or args.channels_last
                      or (args.device or "cpu").split(":")[0] != "cpu"):
        raise CnnzooError("--int8 runs on the CPU and chooses its own backend: drop --backend, "
                          "--optimize, --amp and --channels-last, and use --device cpu")
    if args.weights and args.pretrained:
        raise CnnzooError("give --weights or --pretrained, not both")
    model, resolved = load_model(args)
    config = resolved.run_config
    run_dir = resolved.origin if config else None
    args.run = run_dir
    source, dataset, which = _dataset(args, config, model)
    n_out = model.default_cfg.num_classes
    if source.num_classes != n_out:
        raise CnnzooError(f"{source.spec} has {source.num_classes} classes but the weights have "
                          f"{n_out} outputs")
    names = class_names(n_out, config) if config else source.classes
    default_png = (Path(run_dir) if run_dir else Path(".")) / f"confusion-{Path(source.spec).name}.png"
    png = Path(args.confusion) if args.confusion else default_png
    if png.exists() and not args.force:
        raise CnnzooError(f"{png} exists; pass --force to overwrite it or -o another file")
    device = setup(args.device or ("cpu" if ort or args.int8 else None)).device
    model.to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    if ort:
        from ..perf.optimize import onnxruntime_model
        model = onnxruntime_model(model, model.model_name)
    loader = make_loader(dataset, batch_size=args.batch_size, train=False, seed=0)
    optimized = None
    if args.int8:
        model = _int8(args, config, model)
        optimized = model.report.describe()
    if args.optimize:
        from ..perf import optimize
        amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)
        # The choices are timed on a batch of the data it will score, at its size.
        example = next(iter(loader))[0].to(device)
        model = optimize(model, example=example, amp_dtype=amp_dtype,
                         channels_last=True if args.channels_last else "auto")
        optimized = model.report.describe()
    # An optimised model runs in the precision it chose; autocast around it would only recast.
    result = evaluate(model, loader, n_out, device=device,
                      amp="none" if optimized else args.amp, channels_last=args.channels_last)
    plot_confusion(result, names, png, title=f"{args.model} on {source.spec} ({which}): "
                                            f"top-1 {result.top1:.2f}%")
    per_class = dict(zip(names, result.per_class))
    skipped = [{"file": f, "reason": r} for f, r in source.skipped]
    skipped += [{"file": f, "reason": r} for f, (r, _) in loader.skipped.items()]
    if args.json:
        print(json.dumps({"top1": result.top1, "top5": result.top5, "loss": result.loss,
                          "images": result.count, "per_class": per_class,
                          "confusion_png": str(png), "skipped_images": skipped,
                          "optimized": optimized, "int8": args.int8}, indent=2))
        return 0
    if skipped:
        print(f"skipped {len(skipped)} unreadable image(s): {skipped[0]['file']} "
              f"({skipped[0]['reason']}){' ...' if len(skipped) > 1 else ''}")
    if optimized:
        print(f"{'int8' if args.int8 else 'optimized'}: {optimized}")
    print(f"{args.model} on {source.spec} ({which}, {result.count} images): "
          f"top-1 {result.top1:.2f}%  top-5 {result.top5:.2f}%  loss {result.loss:.4f}")
    width = max(len(n) for n in names)
    for name, acc in per_class.items():
        print(f"  {name:<{width}}  {'-' if acc is None else f'{acc:6.2f}%'}")
    print(f"confusion matrix: {png}")
    return 0
