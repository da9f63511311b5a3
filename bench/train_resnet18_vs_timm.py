"""Training throughput of cnnzoo's ResNet-18 against timm's, same batch, same step, same run.

Both models get the step `cnnzoo train` takes (cnnzoo's optimizer with no decay on norms and
biases, cross-entropy, backward, SGD step) on CIFAR-sized input (3x32x32, 10 classes). Timings
alternate between the two models in rounds and the median round counts, so load from other
processes on a shared machine hits both alike. Run from the repository root:

    PYTHONPATH=src python bench/train_resnet18_vs_timm.py [--device cuda] [--amp bf16]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--img-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=5, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", choices=("none", "bf16"), default="none")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import timm

    from cnnzoo.engine.evaluate import autocast
    from cnnzoo.engine.optim import build_optimizer
    from cnnzoo.engine.trainer import compute_loss
    from cnnzoo.registry import create_model

    dev = torch.device(args.device)
    torch.manual_seed(0)
    models = {"cnnzoo": create_model("resnet18", num_classes=10),
              "timm": timm.create_model("resnet18", num_classes=10)}
    n_params = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
    assert n_params["cnnzoo"] == n_params["timm"], n_params
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size, device=dev)
    y = torch.randint(0, 10, (args.batch_size,), device=dev)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    criterion = torch.nn.CrossEntropyLoss()
    steps = {}
    for name, model in models.items():
        model.to(dev).train()
        if args.channels_last:
            model.to(memory_format=torch.channels_last)
        opt = build_optimizer(model, "sgd", lr=0.01, weight_decay=5e-4)

        def step(model=model, opt=opt):
            with autocast(dev, args.amp):
                loss = compute_loss(model(x), y, criterion, None)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        steps[name] = step

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for step in steps.values():  # warm-up: allocator, kernels, caches
        for _ in range(2):
            step()
    rates = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            sync()
            t = time.perf_counter()
            for _ in range(args.steps):
                step()
            sync()
            rates[name].append(args.steps * args.batch_size / (time.perf_counter() - t))
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"resnet18 train step, batch {args.batch_size} x 3x{args.img_size}x{args.img_size}, "
          f"{dev}, amp {args.amp}, threads {torch.get_num_threads()}, "
          f"{args.rounds} rounds x {args.steps} steps (median)")
    for name in steps:
        print(f"  {name:<7} {med[name]:10,.1f} images/s   (rounds: "
              f"{', '.join(f'{r:,.0f}' for r in rates[name])})")
    print(f"  cnnzoo / timm = {med['cnnzoo'] / med['timm']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
