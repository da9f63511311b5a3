"""The benchmark harness: timm's methodology and column names, so our rows join theirs.

Methodology (timm's ``benchmark.py``): a random batch created once on the device, ``warmup``
untimed steps, then ``steps`` timed steps each closed by a device synchronisation; samples/s is
the batch count over the wall time of the timed run, step time the mean of the timed steps in
ms. Inference runs under ``inference_mode``; a training step is zero-grad, forward, cross-entropy
on random targets, backward, optimiser step (SGD with momentum, fused where torch has a fused
kernel for the device), with nothing in the loop that waits on the device except the closing
sync (and the loss-scale check of fp16 AMP, which cannot be avoided).
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..engine.optim import fast_optimizer
from ..errors import CnnzooError
from .optimize import optimize as optimize_model
from .timing import Clock, synchronizer, time_steps

Progress = Callable[[str, int, int], None]
MODES = ("infer", "train", "both")
BACKENDS = ("torch", "onnxruntime")
# timm's column order; ours that describe the run follow.
COLUMNS = ("model", "infer_samples_per_sec", "infer_step_time", "infer_batch_size",
           "infer_img_size", "infer_gmacs", "param_count", "train_samples_per_sec",
           "train_step_time", "train_batch_size", "train_img_size", "device", "backend", "amp",
           "channels_last", "optimized", "compiled")


class BenchSettingsError(CnnzooError, ValueError):
    """A combination of benchmark options that cannot run."""


@dataclass
class BenchSettings:
    batch_size: int = 16
    img_size: int | None = None  # None: the model's default input size
    mode: str = "infer"
    amp: bool = False
    amp_dtype: str | None = None  # None: float16 on CUDA (timm's default), bfloat16 elsewhere
    channels_last: bool = False
    compile: bool = False
    optimize: bool = False
    device: str = "cpu"
    backend: str = "torch"
    warmup: int = 10
    steps: int = 40
    # int8 (``quantize``): None, or the backend asked for ('auto' races them).
    int8: str | None = None

    def check(self) -> None:
        if self.mode not in MODES:
            raise BenchSettingsError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.backend not in BACKENDS:
            raise BenchSettingsError(f"backend must be one of {', '.join(BACKENDS)}")
        if self.batch_size < 1 or self.steps < 1 or self.warmup < 0:
            raise BenchSettingsError("batch size and steps must be >= 1, warm-up >= 0")
        if self.backend == "onnxruntime" and self.mode != "infer":
            raise BenchSettingsError("the onnxruntime backend only runs inference: "
                                     "use --mode infer")
        if self.backend == "onnxruntime" and (self.amp or self.compile):
            raise BenchSettingsError("--amp and --compile apply to the torch backend only")
        if self.int8 is not None and (self.mode != "infer" or self.amp or self.compile
                                      or self.optimize or self.channels_last
                                      or self.backend != "torch"
                                      or self.torch_device.type != "cpu"):
            raise BenchSettingsError("--int8 times inference on the CPU and picks its own "
                                     "backend and layout: use --mode infer, --device cpu and "
                                     "none of --amp, --compile, --optimize, --channels-last, "
                                     "--backend")
        if self.amp_dtype not in (None, "float16", "bfloat16"):
            raise BenchSettingsError("amp dtype must be float16 or bfloat16")
        try:
            torch.device(self.device)
        except RuntimeError as exc:
            raise BenchSettingsError(f"unknown device {self.device!r}") from exc

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    def autocast_dtype(self) -> torch.dtype:
        name = self.amp_dtype or ("float16" if self.torch_device.type == "cuda" else "bfloat16")
        return getattr(torch, name)

    def autocast(self):
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.torch_device.type, dtype=self.autocast_dtype())


def count_gmacs(model: nn.Module, input_size: tuple[int, int, int]) -> float | None:
    """GMACs of one image, counted as the reference table counts them (FlopCounterMode / 2)."""
    device = next(model.parameters()).device
    x = torch.randn(1, *input_size, device=device)
    try:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model.eval()(x)
    except Exception:  # noqa: BLE001 - a model the counter cannot follow still gets timed
        return None
    return round(counter.get_total_flops() / 2e9, 2)


def param_count_m(model: nn.Module) -> float:
    return round(sum(p.numel() for p in model.parameters()) / 1e6, 2)


def _input(settings: BenchSettings, input_size, channels_last: bool) -> torch.Tensor:
    x = torch.randn(settings.batch_size, *input_size, device=settings.torch_device)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _result(prefix: str, per_step: list[float], wall: float, settings: BenchSettings,
            img_size: int) -> dict:
    return {f"{prefix}_samples_per_sec": round(settings.batch_size * len(per_step) / wall, 2),
            f"{prefix}_step_time": round(1000 * sum(per_step) / len(per_step), 3),
            f"{prefix}_batch_size": settings.batch_size, f"{prefix}_img_size": img_size}


def benchmark_inference(model: nn.Module, settings: BenchSettings, input_size, *,
                        clock: Clock = time.perf_counter, progress: Progress | None = None
                        ) -> tuple[dict, str]:
    """Time inference of ``model``; returns the infer_ columns and how it was run."""
    device = settings.torch_device
    model = model.to(device).eval()
    x = _input(settings, input_size, settings.channels_last)
    how = "eager"
    backend = {}
    if settings.int8 is not None:
        from .quantize import quantize

        # Calibrated on random images: int8 kernels take as long whatever the values are.
        fast = quantize(model, x, backend=None if settings.int8 == "auto" else settings.int8,
                        batch_size=settings.batch_size)
        step = lambda: fast(x)  # noqa: E731
        how = f"int8: {fast.report.describe()}"
        backend = {"backend": f"int8 {fast.report.backend}"}
    elif settings.backend == "onnxruntime":
        if settings.optimize:
            # BN folded, and the batch sliced where that measured faster (optimize's ONNX
            # Runtime stage; the oneDNN-fused calls are torch's own, with no ONNX form).
            fast = optimize_model(model, example=x, onnxruntime=True)
            step = lambda: fast(x)  # noqa: E731
            how = f"onnxruntime, optimized: {fast.report.describe()}"
        else:
            from .onnxrt import OrtRunner
            runner = OrtRunner(model, example=x[:1].contiguous(), device=device)
            x_np = x.contiguous().cpu().numpy()
            step = lambda: runner.run_numpy(x_np)  # noqa: E731
            how = "onnxruntime"
    else:
        if settings.optimize:
            # --channels-last pins the layout; without it optimize measures both and keeps one.
            # --compile offers torch.compile as one more candidate, kept only if faster.
            model = optimize_model(model, example=x,
                                   compile="auto" if settings.compile else False,
                                   channels_last=True if settings.channels_last else "auto",
                                   amp_dtype=settings.autocast_dtype() if settings.amp else None)
            how = f"optimized: {model.report.describe()}"
        else:
            if settings.channels_last:
                model = model.to(memory_format=torch.channels_last)
            if settings.compile:
                model = torch.compile(model)
                how = "compiled"

        # An optimised model applies its own precision choice; the others take the flag.
        amp = contextlib.nullcontext if settings.optimize else settings.autocast

        def step():
            with torch.inference_mode(), amp():
                return model(x)

    report = (lambda i, n: progress("infer", i, n)) if progress else None
    per_step, wall = time_steps(step, warmup=settings.warmup, steps=settings.steps,
                                sync=synchronizer(device), clock=clock, on_step=report)
    return {**_result("infer", per_step, wall, settings, input_size[-1]), **backend}, how


def _optimizer(model: nn.Module, scaled: bool = False) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    return fast_optimizer(torch.optim.SGD, [{"params": params}], scaled=scaled, lr=1e-4,
                          momentum=0.9)


def grad_scaler(settings: BenchSettings) -> torch.amp.GradScaler:
    # Loss scaling is needed for float16 only: bfloat16 has float32's exponent range.
    return torch.amp.GradScaler(settings.torch_device.type, enabled=settings.amp
                                and settings.autocast_dtype() == torch.float16)


def train_step(model: nn.Module, settings: BenchSettings,
               x: torch.Tensor) -> Callable[[], None]:
    """One training step of ``model`` on batch ``x`` (random targets), ready to be timed."""
    device = settings.torch_device
    model = model.to(device).train()
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    scaler = grad_scaler(settings)
    optimizer = _optimizer(model, scaled=scaler.is_enabled())
    net = torch.compile(model) if settings.compile else model
    num_classes = getattr(model, "num_classes", 0) or 1000
    target = torch.randint(0, num_classes, (x.shape[0],), device=device)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with settings.autocast():
            out = net(x)
            if isinstance(out, (tuple, list)):  # auxiliary heads in training mode
                out = out[0]
            loss = loss_fn(out, target)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return step


def benchmark_train(model: nn.Module, settings: BenchSettings, input_size, *,
                    clock: Clock = time.perf_counter, progress: Progress | None = None) -> dict:
    """Time training steps of ``model``; returns the train_ columns."""
    step = train_step(model, settings, _input(settings, input_size, settings.channels_last))
    report = (lambda i, n: progress("train", i, n)) if progress else None
    per_step, wall = time_steps(step, warmup=settings.warmup, steps=settings.steps,
                                sync=synchronizer(settings.torch_device), clock=clock,
                                on_step=report)
    return _result("train", per_step, wall, settings, input_size[-1])


def bench_model(name: str, settings: BenchSettings, *, clock: Clock = time.perf_counter,
                progress: Progress | None = None,
                build: Callable[..., nn.Module] | None = None) -> dict:
    """One CSV row for a registered model (or for ``build(**kwargs)``, a peer's constructor)."""
    from ..registry import create_model, default_cfg
    settings.check()
    if build is None:
        cfg = default_cfg(name)
        kwargs = {}
        if settings.img_size and cfg.fixed_size:
            kwargs["img_size"] = settings.img_size  # LeNet-5, AlexNet 2012: rebuilt for the size
        build = lambda: create_model(name, **kwargs)  # noqa: E731
        chans, h, w = cfg.input_size
    else:
        chans, h, w = 3, 224, 224
    if settings.img_size:
        h = w = settings.img_size
    input_size = (chans, h, w)
    model = build().to(settings.torch_device)
    row: dict = {"model": name, "param_count": param_count_m(model),
                 "infer_gmacs": count_gmacs(model, input_size), "device": settings.device,
                 "backend": settings.backend,
                 "amp": str(settings.autocast_dtype()).removeprefix("torch.") if settings.amp
                 else "", "channels_last": settings.channels_last,
                 "optimized": "", "compiled": settings.compile}
    if settings.mode in ("infer", "both"):
        result, how = benchmark_inference(model, settings, input_size, clock=clock,
                                          progress=progress)
        row.update(result)
        row["optimized"] = how if settings.optimize or settings.int8 else ""
    if settings.mode in ("train", "both"):
        model = build()  # a fresh one: optimize() and compile must not leak into training
        row.update(benchmark_train(model, settings, input_size, clock=clock, progress=progress))
    return {k: row.get(k, "") for k in COLUMNS}
