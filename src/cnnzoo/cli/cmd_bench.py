"""`cnnzoo bench MODEL...`: inference and training throughput, in timm's CSV columns."""
from __future__ import annotations

import argparse
import csv
import os
import sys
from dataclasses import replace
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..errors import CnnzooError
from ..perf.bench import BACKENDS, COLUMNS, MODES, BenchSettings, bench_model
from ..memory import huge_pages
from ..registry import default_cfg, is_model, list_models
from ..resolve import resolve
from ..weights.io import atomic_write
from ._int8 import INT8_BACKENDS
from ._types import add_set_option

NAME = "bench"
HELP = "time inference and training of models (timm's method and CSV columns)"
ORDER = 60


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="registered names or shell wildcards, saved-model or run folders, "
                        "hf-hub:ORG/NAME")
    p.add_argument("-b", "--batch-size", type=int, default=None,
                   help="images per step (default: 256 on a GPU, as timm; 16 on a CPU)")
    p.add_argument("--img-size", type=int, default=None,
                   help="square input side (default: each model's own)")
    p.add_argument("--mode", choices=MODES, default="infer")
    p.add_argument("--amp", action="store_true", help="mixed precision (autocast)")
    p.add_argument("--amp-dtype", choices=("float16", "bfloat16"), default=None,
                   help="autocast dtype (default: float16 on CUDA, bfloat16 elsewhere)")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory layout")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--optimize", action="store_true",
                   help="cnnzoo.perf.optimize: BN folding, layout and AMP mode chosen by "
                        "measuring on the device")
    p.add_argument("--int8", nargs="?", const="auto", default=None,
                   choices=INT8_BACKENDS,
                   help="time the model quantized to int8 (cnnzoo.quantize, CPU): 'auto' (the "
                        "default) races ONNX Runtime's and PyTorch's int8 and keeps the faster")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: cuda if any)")
    p.add_argument("--backend", choices=BACKENDS, default="torch")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first (default 10)")
    p.add_argument("--steps", type=int, default=40, help="timed steps (default 40)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch and ORT")
    p.add_argument("-o", "--output", type=Path, default=None, help="write the rows as CSV")
    p.add_argument("--force", action="store_true", help="overwrite an existing --output")
    add_set_option(p)


def _expand(patterns: list[str]) -> list[str]:
    names: list[str] = []
    for pat in patterns:
        if any(c in pat for c in "*?[") and not os.path.exists(pat):
            found = list_models(pat)
            if not found:
                raise CnnzooError(f"no registered model matches {pat!r}")
            names += found
        else:
            # Resolved before anything is timed: an unknown name (with the closest names) or a
            # bad folder fails here, not after the models before it.
            res = resolve(pat)
            chans = res.in_chans or default_cfg(res.arch).input_size[0]
            if not is_model(pat) and chans != 3:
                # bench_model feeds 3-channel input to a model it is handed a builder for.
                raise CnnzooError(f"{pat} takes {chans}-channel input: time its architecture, "
                                  f"`cnnzoo bench {res.arch}` (weights do not change the timing)")
            names.append(pat)
    return list(dict.fromkeys(names))


def _bench(name: str, settings: BenchSettings, progress) -> dict:
    """A registered name as bench_model builds it; any other source resolved once, here."""
    if is_model(name):
        return bench_model(name, settings, progress=progress)
    from ..resolve import build
    res = resolve(name, img_size=settings.img_size)
    side = settings.img_size or (res.cfg.get("input_size") or (0, 224))[1]
    return bench_model(name, replace(settings, img_size=side), progress=progress,
                       build=lambda: build(res))


def _settings(args: argparse.Namespace) -> BenchSettings:
    device = args.device or ("cuda" if torch.cuda.is_available() and not args.int8 else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise CnnzooError(f"unknown device {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CnnzooError("--device cuda asked for, but torch sees no CUDA device")
    batch = args.batch_size or (256 if dev.type == "cuda" else 16)
    s = BenchSettings(batch_size=batch, img_size=args.img_size, mode=args.mode, amp=args.amp,
                      amp_dtype=args.amp_dtype, channels_last=args.channels_last,
                      compile=args.compile, optimize=args.optimize, device=device,
                      backend=args.backend, warmup=args.warmup, steps=args.steps,
                      int8=args.int8)
    s.check()
    return s


def _write_csv(rows: list[dict], path: Path) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(COLUMNS))
            w.writeheader()
            w.writerows(rows)
    atomic_write(path, write)


def _print_table(rows: list[dict], console: Console) -> None:
    table = Table(title="cnnzoo bench")
    cols = [("model", "model"), ("params (M)", "param_count"), ("GMACs", "infer_gmacs"),
            ("infer img/s", "infer_samples_per_sec"), ("infer ms/step", "infer_step_time"),
            ("train img/s", "train_samples_per_sec"), ("train ms/step", "train_step_time"),
            ("how", "optimized")]
    cols = [c for c in cols if any(r.get(c[1]) not in ("", None) for r in rows)]
    for title, _ in cols:
        table.add_column(title, justify="left" if title in ("model", "how") else "right")
    for r in rows:
        table.add_row(*(str(r.get(key, "")) for _, key in cols))
    console.print(table)


def _variant(name: str, settings: BenchSettings, pairs) -> tuple:
    """(settings, build) for ``--set``: the variant checked on the meta device first, so a
    wrong key is one line before any timing; the registered model itself when none is set."""
    import dataclasses

    from ..inspect.meta import on_meta
    from ..inspect.variants import checked_settings, create_variant
    from ..registry import create_model, default_cfg

    kw = checked_settings(name, pairs)
    if not kw:
        return settings, None
    cfg = default_cfg(name)
    if cfg.input_size[0] != 3:
        raise CnnzooError(f"bench --set times 3-channel models only; {name} takes "
                          f"{cfg.input_size[0]}")
    size = settings.img_size or cfg.input_size[1]
    if cfg.fixed_size:
        kw.setdefault("img_size", size)
    with on_meta():
        create_variant(name, kw, lambda **k: create_model(name, **k))
    # bench_model times a given build at 3 x img_size x img_size: the model's own size unless
    # --img-size says otherwise.
    return dataclasses.replace(settings, img_size=size), lambda: create_model(name, **kw)


def run(args: argparse.Namespace) -> int:
    if args.output is not None and args.output.exists() and not args.force:
        raise CnnzooError(f"{args.output} exists; pass --force to overwrite it")
    names = _expand(args.models)
    settings = _settings(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = {name: _variant(name, settings, args.settings) for name in names}
    err = Console(stderr=True)
    if torch.device(settings.device).type == "cpu":
        err.print(huge_pages().describe())  # worth up to 1.6x on CPU: say which way it went
    rows = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err, transient=True) as progress:
        models_task = progress.add_task("models", total=len(names))
        steps_task = progress.add_task("", total=settings.warmup + settings.steps)

        def on_step(phase: str, done: int, total: int) -> None:
            progress.update(steps_task, completed=done, total=total,
                            description=f"  {phase} step")

        for name in names:
            progress.update(models_task, description=f"{name}")
            progress.reset(steps_task)
            run_settings, build = variants[name]
            row = (bench_model(name, run_settings, progress=on_step, build=build)
                   if build is not None else _bench(name, settings, on_step))
            rows.append(row)
            progress.advance(models_task)
            # One line per finished model survives the transient bar, for long runs.
            err.print(f"{name}: " + ", ".join(f"{k}={row[k]}" for k in
                                              ("infer_samples_per_sec", "train_samples_per_sec")
                                              if row[k] != ""))
    _print_table(rows, Console(width=140, file=sys.stdout))
    if args.output is not None:
        _write_csv(rows, args.output)
        print(f"wrote {len(rows)} rows to {args.output}")
    return 0

