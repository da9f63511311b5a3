"""Why ``for_training`` and ``optimize`` consider NHWC on a CPU: each model in NCHW and NHWC, in turns.

``perf.layout.set_layout`` puts a model's weights in channels_last, and its convolutions then
run NHWC whatever the input's layout. This prints, per model, the median step in NCHW and the
speed of the NHWC run over it (above 1: NHWC faster), paired round by round with the range of
the rounds, and their geometric mean: the figures the passes stand on. ``--train`` times a training step (forward, backward, SGD)
instead of inference.

    PYTHONPATH=src python bench/layouts.py --threads 2
    PYTHONPATH=src python bench/layouts.py --threads 2 --train -b 8 --models resnet50,mobilenet_v2
"""
from __future__ import annotations

import argparse
import math
import statistics

import torch

import cnnzoo
from cnnzoo.perf.layout import set_layout
from cnnzoo.perf.timing import race, round_ratios

MODELS = ("alexnet,googlenet,vgg16,bn_inception,inception_v3,resnet18,resnet50,resnext50_32x4d,"
          "wide_resnet50_2,densenet121,inception_v4,inception_resnet_v2,drn_c_26,nl_resnet50,"
          "seresnet50,cbam_resnet50,dcn_resnet50,mobilenet_v1,mobilenet_v2,mobilenet_v3_large,"
          "mobilenet_v3_small,efficientnet_b0,efficientnet_v2_s")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=MODELS, help="comma-separated cnnzoo names")
    p.add_argument("-b", "--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--max-side", type=int, default=320,
                   help="inputs at the model's own size, capped here (EfficientNet B7: 600)")
    p.add_argument("--train", action="store_true", help="time training steps instead")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=2)
    return p.parse_args(argv)


def step(model: torch.nn.Module, x: torch.Tensor, train: bool):
    if not train:
        def run():
            with torch.inference_mode():
                model(x)
        return run
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)

    def run():
        opt.zero_grad(set_to_none=True)
        out = model(x)
        out = out[0] if isinstance(out, (tuple, list)) else out  # aux logits in training
        out.float().logsumexp(1).mean().backward()
        opt.step()
    return run


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}; batch {args.batch_size}, {torch.get_num_threads()} "
          f"threads, cpu, fp32, {'training' if args.train else 'inference'}", flush=True)
    speeds = []
    for name in args.models.split(","):
        chans, side, _ = cnnzoo.default_cfg(name).input_size
        side = min(side, args.max_side)
        x = torch.randn(args.batch_size, chans, side, side)
        model = cnnzoo.create_model(name).train(args.train)
        runs = {}
        for label, layout in (("nchw", None), ("nhwc", torch.channels_last)):
            run = step(model, x, args.train)

            def turn(run=run, layout=layout):
                set_layout(model, layout is not None)
                run()
            runs[label] = turn
        per_step = race(runs, rounds=args.rounds, steps=args.steps, warmup=1, turn_warmup=1)
        ratios = round_ratios(per_step, "nchw", "nhwc", args.steps)
        speed = statistics.median(ratios)
        speeds.append(speed)
        print(f"{name:22s} {side:4d}px  nchw {statistics.median(per_step['nchw']) * 1e3:8.1f} ms"
              f"  nhwc/nchw speed {speed:.3f} ({min(ratios):.2f}-{max(ratios):.2f})", flush=True)
    print(f"geometric mean: {math.exp(sum(map(math.log, speeds)) / len(speeds)):.3f}")


if __name__ == "__main__":
    main()
