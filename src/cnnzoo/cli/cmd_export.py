"""`cnnzoo export MODEL [--weights W] -o model.onnx`: ONNX, checked by onnxruntime."""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from ..export import DEFAULT_OPSET, ExportError, export_onnx
from ..export.onnx import DEFORM_OPSET
from ..resolve import load
from ..weights import PretrainedWarning
from .cmd_predict import MODEL_HELP

NAME = "export"
HELP = "export a model to ONNX (dynamic batch), verified against onnxruntime"
ORDER = 80


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("-o", "--output", required=True, type=Path, help="ONNX file to write")
    p.add_argument("--weights", metavar="W",
                   help="for a registered MODEL: 'torchvision', 'timm', 'keras', a "
                        ".safetensors/.pth/.h5 file, a run, a saved model or a URL (default: "
                        "random initialisation)")
    p.add_argument("--num-classes", type=int, help="classifier size (default: the model's)")
    p.add_argument("--img-size", type=int, help="square input side to trace at "
                                                "(default: the model's; the batch stays dynamic)")
    p.add_argument("--opset", type=int,
                   help=f"ONNX opset (default {DEFAULT_OPSET}; {DEFORM_OPSET} for deformable "
                        f"convolutions)")
    p.add_argument("--force", action="store_true", help="replace an existing output file")


def run(args: argparse.Namespace) -> int:
    # Refuse before building anything: a big model and its weights take a while to load.
    if args.output.exists() and not args.force:
        raise ExportError(f"{args.output} already exists; pass --force to replace it")
    with warnings.catch_warnings(record=True) as notes:
        warnings.simplefilter("always")
        model, _ = load(args.model, num_classes=args.num_classes,
                        pretrained=args.weights or None)
    for note in notes:
        if issubclass(note.category, PretrainedWarning):
            print(f"note: {note.message}")
    cfg = model.default_cfg
    input_size = cfg.input_size
    if args.img_size:
        if cfg.fixed_size and args.img_size != cfg.input_size[-1]:
            side = cfg.input_size[-1]
            raise ExportError(f"{model.model_name} takes only {side}x{side} "
                              f"input; drop --img-size")
        input_size = (cfg.input_size[0], args.img_size, args.img_size)
    result = export_onnx(model, args.output, input_size=input_size, opset=args.opset,
                         force=args.force)
    print(f"wrote {result.path} ({model.model_name}, opset {result.opset}, input "
          f"Nx{'x'.join(map(str, result.input_size))} with dynamic N, "
          f"{result.size_bytes / 1e6:.1f} MB); onnxruntime matches PyTorch on a batch of "
          f"{result.check_batch}: max abs diff {result.max_abs_diff:.1e}")
    return 0
