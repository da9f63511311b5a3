"""Why optimize() moves some 3x3 convs to NNPACK: one conv per shape, oneDNN against NNPACK.

For each shape (VGG's, ResNet's and Inception's 3x3 stride-1 convs at 224/299 input), the conv
fused with its ReLU for oneDNN (``perf/onednn.py``, weights packed, channels_last input) is
timed in turns with the same conv on NNPACK's Winograd kernels (``perf/nnpack.py``), given the
same channels_last input (so converted to NCHW and back) and given NCHW (no conversion).
Printed: the oneDNN step in ms and NNPACK's speed over it (above 1: NNPACK faster), the min of
the rounds over the min, since a shared machine only ever adds time.

    PYTHONPATH=src python bench/nnpack_layers.py --threads 2
"""
from __future__ import annotations

import argparse

from cnnzoo.memory import tune_memory

tune_memory()  # before torch starts, as the `cnnzoo` command and bench/peers.py run

import torch  # noqa: E402
from torch import nn  # noqa: E402

from cnnzoo.perf import nnpack
from cnnzoo.perf.onednn import fuse_for_cpu
from cnnzoo.perf.timing import race

# (in, out, side): VGG-16 at 224, ResNet-50's bottleneck 3x3s, Inception-v3's 35/17/8 maps.
SHAPES = ((64, 64, 224), (128, 128, 112), (256, 256, 56), (512, 512, 28), (512, 512, 14),
          (64, 64, 56), (128, 128, 28), (256, 256, 14), (512, 512, 7),
          (64, 96, 35), (96, 96, 35), (192, 192, 17), (384, 384, 8))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-b", "--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--rounds", type=int, default=7)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not nnpack.available():
        raise SystemExit("this PyTorch build has no NNPACK")
    print(f"torch {torch.__version__}; batch {args.batch_size}, {torch.get_num_threads()} "
          f"threads, cpu, fp32, inference", flush=True)
    torch.manual_seed(0)
    with torch.inference_mode():
        for c_in, c_out, side in SHAPES:
            x = torch.randn(args.batch_size, c_in, side, side)
            nhwc = x.contiguous(memory_format=torch.channels_last)
            model = nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()).eval()
            fuse_for_cpu(model, nhwc)
            fused = model[0]
            on_nnpack = nnpack.NnpackConv2d(fused)
            per_step = race({"onednn": lambda: fused(nhwc),
                             "nnpack_nhwc": lambda: on_nnpack(nhwc),
                             "nnpack_nchw": lambda: on_nnpack(x)},
                            rounds=args.rounds, warmup=1)
            best = {k: min(v) for k, v in per_step.items()}
            print(f"{c_in:4d}->{c_out:<4d} at {side:3d}x{side:<3d}"
                  f"  oneDNN {best['onednn'] * 1e3:7.1f} ms  NNPACK speed:"
                  f" from NHWC {best['onednn'] / best['nnpack_nhwc']:.2f},"
                  f" from NCHW {best['onednn'] / best['nnpack_nchw']:.2f}", flush=True)


if __name__ == "__main__":
    main()
