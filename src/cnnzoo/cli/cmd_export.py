"""`cnnzoo export MODEL [--weights W] -o model.onnx`: ONNX, checked by onnxruntime."""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from ..export import DEFAULT_OPSET, ExportError, export_onnx
from ..export.onnx import DEFORM_OPSET
from ..resolve import load
from ..weights import PretrainedWarning
from ._int8 import add_int8_options
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
    add_int8_options(p, "with --int8: the images to calibrate on, a DATA argument as `cnnzoo "
                        "train` takes it (folder, shards, mnist...); its training part is used",
                     calib_metavar="DATA", calib_type=str, default_calib=None)
    p.add_argument("--calib-images", type=int, default=256, metavar="N",
                   help="with --int8: how many images of --calib (default 256)")


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
    if args.int8:
        return _export_int8(args, model, input_size)
    result = export_onnx(model, args.output, input_size=input_size, opset=args.opset,
                         force=args.force)
    print(f"wrote {result.path} ({model.model_name}, opset {result.opset}, input "
          f"Nx{'x'.join(map(str, result.input_size))} with dynamic N, "
          f"{result.size_bytes / 1e6:.1f} MB); onnxruntime matches PyTorch on a batch of "
          f"{result.check_batch}: max abs diff {result.max_abs_diff:.1e}")
    return 0


def _export_int8(args: argparse.Namespace, model, input_size) -> int:
    """The QDQ ONNX file ONNX Runtime's static quantizer writes, then checked: run by an
    onnxruntime session on calibration images and compared with PyTorch's own int8 model (PT2E,
    same calibration), which it must agree with."""
    import dataclasses

    import torch

    from ..data import load_source
    from ..perf.onnxrt import OrtRunner
    from ..perf.quantize import calibration_batches, quantize
    from ..weights.io import atomic_write
    from ._int8 import calibration_loader

    if args.calib is None:
        raise ExportError("--int8 needs --calib DATA: the images to calibrate on")
    if args.opset or args.int8_backend not in ("auto", "onnxruntime"):
        raise ExportError("--int8 writes ONNX Runtime's QDQ file at its own opset: "
                          "drop --opset and --int8-backend")
    source = load_source(args.calib)
    # The images at the size the file is traced at (--img-size), grey or RGB as the model takes.
    cfg = dataclasses.replace(model.default_cfg, input_size=tuple(input_size))
    loader = calibration_loader(source, cfg, args.calib_images)
    batches = calibration_batches(loader, args.calib_images)
    fast = quantize(model, batches, backend="onnxruntime")
    atomic_write(args.output, lambda tmp: open(tmp, "wb").write(fast.onnx_bytes))
    check = torch.cat(batches)[:32]
    ours = OrtRunner(str(args.output), threads=torch.get_num_threads())(check)
    reference = quantize(model, batches, backend="reference")(check)
    cos = float(torch.nn.functional.cosine_similarity(ours, reference).min())
    agree = float((ours.argmax(1) == reference.argmax(1)).float().mean())
    print(f"wrote {args.output} ({model.model_name}, int8 QDQ, input "
          f"Nx{'x'.join(map(str, input_size))} with dynamic N, "
          f"{args.output.stat().st_size / 1e6:.1f} MB; {fast.report.describe()}); onnxruntime "
          f"against PyTorch's int8 model on {len(check)} images: cosine >= {cos:.4f}, top-1 "
          f"agreement {100 * agree:.1f}%")
    if cos < 0.98:
        raise ExportError(f"the int8 file disagrees with PyTorch's int8 model (cosine {cos:.3f}); "
                          f"kept at {args.output} for inspection")
    return 0
