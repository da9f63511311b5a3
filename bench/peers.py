"""cnnzoo against timm and torchvision, measured in one run on this machine.

For each architecture: cnnzoo eager, cnnzoo ``optimize``d, cnnzoo through ONNX Runtime
(``optimize(model, onnxruntime=True)``: the whole batch or micro-batches, as measured), timm
eager and torchvision eager, with the same batch, resolution, dtype, layout flags and threads.
The variants take turns, round after round, in a rotating order, so drift (thermal, another
process waking up) falls on all of them alike; each variant's images/s is from the median of all
its timed steps. Ratios are against timm eager: per round, the two medians of that round, then the
median over rounds, with the range of the rounds beside it (a range that spans 1.0 is a tie on
this machine), and their geometric mean over the models. Each model's variants share one
process, a fresh one per model (``--in-process`` for one process in all), and so its allocator:
``cnnzoo.memory.tune_memory()``, called before torch starts, gives them all huge pages and the
kept glibc heap. The order the
libraries' models are built in shows in their speeds, so each model runs twice, in two
processes, cnnzoo's models built first in one and last in the other, and the two are pooled
(``--build-order`` picks one, at half the time).

The roofline is the machine's best measured dense throughput: the larger of an fp32 GEMM and a
large 1x1 convolution in channels_last (oneDNN's fastest path on x86); each model's achieved
FLOP/s (2 x MACs per image x images/s) is reported as a fraction of it, and so is timm's, whose
inverse is the ceiling: the ratio over timm a model would reach running at the roofline. It is
as good a bound as the roofline is the machine's peak, and it is worked out from mean images/s
where the ratios are medians of ratios paired round by round, so a ratio at the roofline can
read a few percent above it; depthwise layers, bound by memory, stay far below it. A ratio goal
above a model's ceiling is out of reach on this machine.

    PYTHONPATH=src python bench/peers.py                       # 2-core CPU table of the issue
    PYTHONPATH=src python bench/peers.py --device cuda --amp --channels-last -b 256
    PYTHONPATH=src python bench/peers.py --int8 --threads 2 --build-order cnnzoo-first

``--int8``: cnnzoo's int8 (``cnnzoo.quantize``, its backends raced), cnnzoo fp32 ``optimize``,
timm fp32 eager, and torchvision's int8 model where torchvision ships one (its eager-mode
quantization on the x86 backend: ``fuse_model``, the x86 qconfig, calibrated on the same batch
as ours, random weights both sides). Ratios are over timm fp32 and over torchvision's int8.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

from cnnzoo.memory import tune_memory

# Before torch starts: every library measured here then shares one allocator setting, the one
# the `cnnzoo` command runs with.
tune_memory()

import torch  # noqa: E402

import cnnzoo  # noqa: E402

from cnnzoo.perf import BenchSettings, count_gmacs, optimize
from cnnzoo.memory import huge_pages
from cnnzoo.perf.bench import train_step
from cnnzoo.perf.timing import race, round_ratios, synchronizer

# cnnzoo name -> (timm name, torchvision name, input side).
PEERS = {
    "resnet50": ("resnet50", "resnet50", 224),
    "mobilenet_v2": ("mobilenetv2_100", "mobilenet_v2", 224),
    "mobilenet_v3_large": ("mobilenetv3_large_100", "mobilenet_v3_large", 224),
    "efficientnet_b0": ("efficientnet_b0", "efficientnet_b0", 224),
    "densenet121": ("densenet121", "densenet121", 224),
    "vgg16": ("vgg16", "vgg16", 224),
    "inception_v3": ("inception_v3", "inception_v3", 299),
}

# Training does what the model was built to do, so the peers must be built alike: cnnzoo's
# models have their papers' dropout before the classifier and efficientnet_b0 the official
# drop-connect 0.2 (stochastic depth), as torchvision's defaults do, where timm builds either
# only when asked (its train.py passes --drop and --drop-path); without them timm's step would
# skip work ours does.
TIMM_TRAIN_KWARGS = {
    "mobilenet_v2": {"drop_rate": 0.2},
    "mobilenet_v3_large": {"drop_rate": 0.2},
    "efficientnet_b0": {"drop_rate": 0.2, "drop_path_rate": 0.2},
    "vgg16": {"drop_rate": 0.5},
    "inception_v3": {"drop_rate": 0.5},
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(PEERS), help="comma-separated cnnzoo names")
    p.add_argument("-b", "--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch and ORT threads")
    p.add_argument("--amp", action="store_true", help="autocast to --amp-dtype")
    p.add_argument("--amp-dtype", default="bfloat16", choices=("bfloat16", "float16"))
    p.add_argument("--channels-last", action="store_true", help="NHWC for every peer")
    p.add_argument("--compile", action="store_true", help="let optimize() try torch.compile")
    p.add_argument("--no-ort", action="store_true", help="skip the ONNX Runtime variant")
    p.add_argument("--int8", action="store_true",
                   help="cnnzoo int8, cnnzoo fp32 optimize, timm fp32, torchvision int8")
    p.add_argument("--train", action="store_true",
                   help="time training steps instead (cnnzoo, timm, torchvision; SGD, fused)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=3, help="timed steps per variant per round")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before the first round")
    p.add_argument("--csv", default=None, help="also add the rows to this CSV (bench/results/)")
    p.add_argument("--in-process", action="store_true",
                   help="every model in this one process (by default each gets its own); "
                        "with --build-order both each model still gets two")
    p.add_argument("--build-order", default="both",
                   choices=("both", "cnnzoo-first", "peers-first"),
                   help="which library's models are built first in a model's process; 'both' "
                        "(the default) runs the model twice, once each way, and pools them")
    p.add_argument("--row-json", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def roofline(device: torch.device, dtype: torch.dtype, note: str) -> dict[str, float]:
    """Best GFLOP/s of a GEMM and of a large channels_last 1x1 conv on ``device`` in ``dtype``."""
    sync = synchronizer(device)

    def best(fn, flops, reps=3) -> float:
        fn()
        sync()
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t)
        return flops / min(times) / 1e9

    big = device.type == "cuda"
    out = {}
    with torch.inference_mode():
        gemm = []
        for n in ((4096, 8192) if big else (1024, 2048)):
            a = torch.randn(n, n, device=device, dtype=dtype)
            b = torch.randn(n, n, device=device, dtype=dtype)
            gemm.append(best(lambda: a @ b, 2 * n ** 3))
        out["gemm"] = max(gemm)
        conv = []
        batch = 256 if big else 16
        for cin, cout, side in ((256, 1024, 56), (512, 2048, 28)):
            w = torch.nn.Conv2d(cin, cout, 1, bias=False).to(
                device, dtype, memory_format=torch.channels_last)
            x = torch.randn(batch, cin, side, side, device=device, dtype=dtype).contiguous(
                memory_format=torch.channels_last)
            conv.append(best(lambda: w(x), 2 * batch * side * side * cin * cout))
        out["conv1x1_cl"] = max(conv)
    out["peak"] = max(out["gemm"], out["conv1x1_cl"])
    print(f"roofline ({note}): GEMM {out['gemm']:.0f} GFLOP/s, 1x1 conv channels_last "
          f"{out['conv1x1_cl']:.0f} GFLOP/s -> peak {out['peak']:.0f}", flush=True)
    return out


def variants(name: str, args, device: torch.device, x: torch.Tensor) -> dict:
    """Callables, one per variant, each running one batch."""
    import timm
    import torchvision
    timm_name, tv_name, _ = PEERS.get(name, (name, name, 224))
    layout = torch.channels_last if args.channels_last else torch.contiguous_format
    amp = (torch.autocast(device.type, dtype=getattr(torch, args.amp_dtype)) if args.amp
           else torch.autocast(device.type, enabled=False))

    def eager(model):
        model = model.to(device, memory_format=layout).eval()

        def run():
            with torch.inference_mode(), amp:
                return model(x)
        return run

    if args.train:
        settings = BenchSettings(batch_size=x.shape[0], amp=args.amp, amp_dtype=args.amp_dtype,
                                 channels_last=args.channels_last, device=str(device))
        timm_kw = TIMM_TRAIN_KWARGS.get(name, {})
        builders = {"timm": lambda: timm.create_model(timm_name, **timm_kw),
                    "tv": lambda: torchvision.models.get_model(tv_name)}
        if cnnzoo.is_model(name):
            # What `cnnzoo train` steps: the model with perf.for_training's conv twins (and
            # NHWC on a CPU); the plain model trains as timm's does.
            zoo = {"zoo_eager": lambda: cnnzoo.for_training(cnnzoo.create_model(name))}
            builders = {**builders, **zoo} if args.build_order == "peers-first" else \
                {**zoo, **builders}
        return {k: train_step(build(), settings, x) for k, build in builders.items()}
    if args.int8:
        return int8_variants(name, args, tv_name, timm_name, eager, x)
    out = {}
    if args.build_order == "peers-first":
        out.update(peer_variants(name, tv_name, timm_name, eager))
    if cnnzoo.is_model(name):
        zoo = cnnzoo.create_model(name).eval().to(device)
        out["zoo_eager"] = eager(zoo)
        # optimize() makes its own precision choice (autocast or weights cast once), measured.
        opt = optimize(zoo, example=x, channels_last="auto",
                       compile="auto" if args.compile else False,
                       amp_dtype=getattr(torch, args.amp_dtype) if args.amp else None)
        print(f"  {name} optimised: {opt.report.describe()} {opt.report.timings_ms}", flush=True)
        out["zoo_opt"] = lambda: opt(x)
        if not args.no_ort and device.type == "cpu":
            # optimize's ONNX Runtime path: BN folded, the batch sliced where that measured
            # faster; ONNX Runtime gets torch's thread count.
            ort = optimize(zoo, example=x, onnxruntime=True)
            print(f"  {name} onnxruntime: {ort.report.describe()} {ort.report.timings_ms}",
                  flush=True)
            out["zoo_ort"] = lambda: ort(x)
    if args.build_order != "peers-first":
        out.update(peer_variants(name, tv_name, timm_name, eager))
    return out


# torchvision.models.quantization's builders, by torchvision name, with the keywords that make
# them match the float models timed beside them (no auxiliary heads in inference).
TV_INT8 = {"resnet50": {}, "mobilenet_v2": {}, "mobilenet_v3_large": {},
           "googlenet": {"aux_logits": False, "init_weights": False},
           "inception_v3": {"aux_logits": False, "init_weights": False}}


def tv_int8(tv_name: str, x: torch.Tensor):
    """torchvision's int8 model, quantized as its own recipe does (eager mode, x86 backend)."""
    import warnings

    import torchvision.models.quantization as tvq
    from torch.ao import quantization as tq
    torch.backends.quantized.engine = "x86"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's eager mode announces its deprecation
        model = getattr(tvq, tv_name)(weights=None, quantize=False, **TV_INT8[tv_name]).eval()
        model.fuse_model(is_qat=False)
        model.qconfig = tq.get_default_qconfig("x86")
        tq.prepare(model, inplace=True)
        with torch.inference_mode():
            model(x)
        return tq.convert(model, inplace=True)


def int8_variants(name: str, args, tv_name: str, timm_name: str, eager, x) -> dict:
    import timm
    out = {}
    if cnnzoo.is_model(name):
        zoo = cnnzoo.create_model(name).eval()
        # Calibrated on the timed batch: int8 kernels take as long whatever the values are.
        q8 = cnnzoo.quantize(zoo, x, batch_size=args.batch_size)
        print(f"  {name} int8: {q8.report.describe()}; built in {q8.report.build_s} s"
              f"{'; failed: ' + str(q8.report.failed) if q8.report.failed else ''}", flush=True)
        out["zoo_int8"] = lambda: q8(x)
        opt = optimize(zoo, example=x, channels_last="auto")
        print(f"  {name} optimised: {opt.report.describe()}", flush=True)
        out["zoo_opt"] = lambda: opt(x)
    out["timm"] = eager(timm.create_model(timm_name))
    if tv_name in TV_INT8:
        model = tv_int8(tv_name, x)
        out["tv_int8"] = eager(model)
    return out


def peer_variants(name: str, tv_name: str, timm_name: str, eager) -> dict:
    import timm
    import torchvision
    out = {}
    try:
        out["timm"] = eager(timm.create_model(timm_name))
    except Exception as exc:  # noqa: BLE001 - report and go on with the others
        print(f"  timm {timm_name}: {exc}", flush=True)
    try:
        kw = {"init_weights": False, "aux_logits": False} if tv_name in ("inception_v3",) else {}
        out["tv"] = eager(torchvision.models.get_model(tv_name, **kw))
    except Exception as exc:  # noqa: BLE001
        print(f"  torchvision {tv_name}: {exc}", flush=True)
    return out


def measure(runs: dict, args, device: torch.device) -> dict[str, list[float]]:
    """Seconds of every timed step of each variant, alternating in a rotating order."""
    # One untimed step per turn: caches refilled after the previous variant.
    return race(runs, rounds=args.rounds, steps=args.steps, warmup=args.warmup,
                turn_warmup=1, sync=synchronizer(device))


def geomean(values: list[float]) -> float:
    values = [v for v in values if v and v > 0]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else float("nan")


def measure_model(name: str, args, device: torch.device) -> tuple[dict, float | None]:
    """One model's row of the table, and the FLOP/s cnnzoo's optimised model reached."""
    side = cnnzoo.default_cfg(name).input_size[-1] if cnnzoo.is_model(name) else \
        PEERS.get(name, (None, None, 224))[2]
    if not cnnzoo.is_model(name):
        print(f"{name}: not registered in cnnzoo yet; peers only", flush=True)
    chans = cnnzoo.default_cfg(name).input_size[0] if cnnzoo.is_model(name) else 3
    x = torch.randn(args.batch_size, chans, side, side, device=device)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    runs = variants(name, args, device, x)
    per_step = measure(runs, args, device)
    ips = {k: args.batch_size / statistics.median(v) for k, v in per_step.items()}
    row = {"model": name, "img_size": side,
           **{f"{k}_ips": round(v, 2) for k, v in ips.items()}}
    # Ratios paired round by round (the median of them, and their range): a variant and
    # timm timed seconds apart, not minutes.
    vs_timm = {k: round_ratios(per_step, "timm", k, args.steps)
               for k in ("zoo_eager", "zoo_opt", "zoo_ort", "zoo_int8")
               if "timm" in ips and k in ips}
    for k, ratios in vs_timm.items():
        row[f"{k}_vs_timm"] = round(statistics.median(ratios), 3)
        row[f"{k}_vs_timm_range"] = span(min(ratios), max(ratios))
    best = [row[f"{k}_vs_timm"] for k in ("zoo_opt", "zoo_ort") if k in vs_timm]
    if best:
        row["zoo_best_vs_timm"] = max(best)
    flops = None
    if cnnzoo.is_model(name) and "zoo_opt" in ips:
        row["gmacs"] = count_gmacs(cnnzoo.create_model(name).to(device), (chans, side, side))
        flops = 2e9 * row["gmacs"] * ips["zoo_opt"]
    if "tv_int8" in ips and "zoo_int8" in ips:
        ratios = round_ratios(per_step, "tv_int8", "zoo_int8", args.steps)
        row["zoo_int8_vs_tv_int8"] = round(statistics.median(ratios), 3)
        row["zoo_int8_vs_tv_int8_range"] = span(min(ratios), max(ratios))
    if "tv" in ips and "zoo_eager" in ips:
        row["zoo_eager_vs_tv"] = round(statistics.median(
            round_ratios(per_step, "tv", "zoo_eager", args.steps)), 3)
    print("  " + ", ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    return row, flops


def add_ceilings(rows: list[dict], peak_gflops: float) -> None:
    """Give each row timm's share of the roofline and the ratio over timm that reaching the
    roofline would be: no implementation runs much faster than the machine's best dense kernel,
    so a ratio goal above a model's ceiling is out of reach on this machine, and one near it asks
    for the roofline itself. On the 2-core EPYC, timm's eager vgg16 already ran at 0.65 of it.
    (timm's images/s are the mean over the build orders, as the table prints them.)"""
    for row in rows:
        if row.get("gmacs") and row.get("timm_ips"):
            timm_gflops = 2 * row["gmacs"] * row["timm_ips"]
            row["timm_roofline"] = round(timm_gflops / peak_gflops, 3)
            row["ceiling_vs_timm"] = round(peak_gflops / timm_gflops, 3)


def _child_argv(argv: list[str], name: str, out: str, order: str) -> list[str]:
    """This run's arguments for one model alone, built in ``order``, its row written to ``out``."""
    rest, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--models", "--build-order"):
            skip = True
        elif not a.startswith(("--models=", "--build-order=")):
            rest.append(a)
    return [*rest, "--models", name, "--build-order", order, "--row-json", out]


def _isolated(name: str, argv: list[str], order: str) -> tuple[dict, float | None, float]:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "row.json")
        done = subprocess.run([sys.executable, os.path.abspath(__file__),
                               *_child_argv(argv, name, out, order)])
        if done.returncode != 0 or not os.path.exists(out):
            print(f"  {name}: its process failed (exit {done.returncode})", flush=True)
            return {"model": name}, None, 0.0
        with open(out) as f:
            got = json.load(f)
    return got["row"], got["flops"], got["peak"]


def span(lo: float, hi: float) -> str:
    """``lo-hi`` to two decimals, rounded outwards: the range printed holds every value in it,
    the ratio beside it (three decimals) too."""
    return f"{math.floor(lo * 100) / 100:.2f}-{math.ceil(hi * 100) / 100:.2f}"


def pool_rows(rows: list[dict]) -> dict:
    """One row from the same model's rows: images/s averaged, ratios by geometric mean, ranges
    joined."""
    rows = [r for r in rows if len(r) > 1] or rows[:1]
    if len(rows) == 1:
        return rows[0]
    out = dict(rows[0])
    for key in rows[0]:
        values = [r.get(key) for r in rows]
        if any(v is None for v in values):
            out.pop(key, None)
        elif key.endswith("_ips"):
            out[key] = round(sum(values) / len(values), 2)
        elif key.endswith("_range"):
            ends = [float(v) for r in values for v in r.split("-")]
            out[key] = span(min(ends), max(ends))
        elif "_vs_" in key:
            out[key] = round(geomean(values), 3)
    best = [out[k] for k in ("zoo_opt_vs_timm", "zoo_ort_vs_timm") if k in out]
    if best:
        out["zoo_best_vs_timm"] = max(best)
    return out


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    flags = (f"batch {args.batch_size}, {torch.get_num_threads()} threads, {device}, "
             f"{args.amp_dtype if args.amp else 'fp32'}"
             f"{', channels_last' if args.channels_last else ''}")
    dtype = getattr(torch, args.amp_dtype) if args.amp else torch.float32
    if args.row_json:  # a child of the run below: one model, its row to the parent
        # The roofline too, next to the model: on a shared machine the best of all of them
        # is nearer the truth (one measured 133 GFLOP/s, another model's run 135 right after).
        peak = roofline(device, dtype, flags + f", with {names[0]}")["peak"]
        row, flops = measure_model(names[0], args, device)
        with open(args.row_json, "w") as f:
            json.dump({"row": row, "flops": flops, "peak": peak}, f)
        return 0
    print(f"torch {torch.__version__}; {flags}; {huge_pages().describe()}", flush=True)
    peak = roofline(device, dtype, flags)["peak"]
    results, rows = [], []
    for name in names:
        # A process per model: in one process, a model measured after others ran slower
        # than alone (efficientnet_b0's eager ratio 0.67 after four models, 1.01-1.15 alone),
        # so a row would depend on which rows came before it.
        if args.build_order != "both" and (args.in_process or len(names) == 1):
            row, flops = measure_model(name, args, device)
        else:
            # The order the libraries' models are built in showed in the ratios: trained in
            # turns in one process, efficientnet_b0 read 0.93 of timm built first, 1.03 built
            # last. Both orders, each in a fresh process, pooled, cancel it.
            orders = ("cnnzoo-first", "peers-first") if args.build_order == "both" else \
                (args.build_order,)
            runs = [_isolated(name, argv, order) for order in orders]
            row = pool_rows([r for r, _, _ in runs])
            found = [f for _, f, _ in runs if f]
            flops = geomean(found) if found else None
            peak = max(peak, *(p for _, _, p in runs))
        rows.append(row)
        if flops:
            results.append((row, flops))
        gc.collect()
    # The roofline again at the end: on a shared machine the best of all is nearer the truth.
    peak = max(peak, roofline(device, dtype, flags + ", again")["peak"])
    for row, flops in results:
        row["zoo_opt_roofline"] = round(flops / 1e9 / peak, 3)
    add_ceilings(rows, peak)
    keys = ("zoo_eager_vs_timm", "zoo_opt_vs_timm", "zoo_ort_vs_timm", "zoo_best_vs_timm",
            "zoo_eager_vs_tv", "zoo_int8_vs_timm", "zoo_int8_vs_tv_int8", "ceiling_vs_timm")
    # Only what was measured: a training run has no optimised or ONNX Runtime column.
    summary = {k: round(geomean([r[k] for r in rows if k in r]), 3) for k in keys
               if any(k in r for r in rows)}
    print("geometric mean: " + ", ".join(f"{k}={v}" for k, v in summary.items()), flush=True)
    _print_markdown(rows)
    if args.csv:  # each row with its machine, torch, commit and command (bench/results.py)
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from results import write_rows
        write_rows(args.csv, rows, threads=torch.get_num_threads(), argv=argv,
                   roofline_gflops=round(peak, 1))
    return 0


def _print_markdown(rows: list[dict]) -> None:
    cols = ["model", "zoo_eager_ips", "zoo_int8_ips", "zoo_opt_ips", "zoo_ort_ips", "timm_ips",
            "tv_ips", "tv_int8_ips", "zoo_eager_vs_timm", "zoo_eager_vs_timm_range",
            "zoo_opt_vs_timm", "zoo_best_vs_timm", "zoo_int8_vs_timm", "zoo_int8_vs_timm_range",
            "zoo_int8_vs_tv_int8", "zoo_int8_vs_tv_int8_range", "zoo_opt_roofline",
            "timm_roofline", "ceiling_vs_timm"]
    cols = [c for c in cols if any(c in r for r in rows)]
    print("| " + " | ".join(cols) + " |")
    print("|" + " --- |" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r.get(c, "-")) for c in cols) + " |")


if __name__ == "__main__":
    sys.exit(main())
