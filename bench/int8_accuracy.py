"""int8 accuracy on real data: resnet18, mobilenet_v2 and efficientnet_b0 trained on MNIST at 32x32,
then quantized by ``cnnzoo.quantize`` on 256 of their training images, scored on held-out ones.

The data is the real MNIST t10k pair in ../shared/data/mnist (the only real MNIST at hand): its
first 8,000 images train, its last 2,000 are held out. Images are padded from 28 to 32 pixels,
one grey channel. Each model trains from scratch (one-cycle, batch 64; SGD with momentum 0.9,
AdamW for efficientnet_b0), then
is quantized with each backend's numerics: ONNX Runtime's QDQ model, and PyTorch's PT2E graph
(``reference``: the same int8 arithmetic inductor compiles, without the compile). The table
gives the fp32 top-1, each int8 top-1, and the share of held-out images on which int8 and fp32
pick the same class.

    PYTHONPATH=src python bench/int8_accuracy.py --csv bench/results/accuracy/int8-mnist.csv

The CSV rows carry the machine, torch and commit (bench/results.py); docs/int8.md's table is
rendered from them by tools/gen_performance.py.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CNNZOO_SHARED", ROOT.parent / "shared"))
MODELS = ("resnet18", "mobilenet_v2", "efficientnet_b0")
BACKENDS = ("onnxruntime", "reference")


def load(data: Path):
    import torch

    from cnnzoo.data import read_idx

    images = torch.from_numpy(read_idx(data / "t10k-images-idx3-ubyte.gz").copy()).float()
    labels = torch.from_numpy(read_idx(data / "t10k-labels-idx1-ubyte.gz").copy()).long()
    x = torch.nn.functional.pad((images / 255 - 0.1307) / 0.3081, (2, 2, 2, 2),
                                value=-0.1307 / 0.3081).unsqueeze(1)
    return (x[:8000], labels[:8000]), (x[8000:10000], labels[8000:10000])


# The optimiser each trains with: SGD left efficientnet_b0 at 71% after 4 epochs, AdamW at 90%.
RECIPES = {"efficientnet_b0": ("adamw", 3e-3)}


def train(name: str, data, epochs: int, batch: int, lr: float, seed: int):
    import torch

    from cnnzoo import create_model

    torch.manual_seed(seed)
    model = create_model(name, num_classes=10, in_chans=1)
    x, y = data
    steps = epochs * (len(x) // batch)
    kind, lr = RECIPES.get(name, ("sgd", lr))
    opt = (torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05) if kind == "adamw"
           else torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4,
                                nesterov=True))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for i in range(len(x) // batch):
            idx = order[i * batch:(i + 1) * batch]
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
            sched.step()
    return model.eval()


def predict(model, x, batch: int = 250):
    import torch

    with torch.no_grad():
        return torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(SHARED / "data" / "mnist"))
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("-b", "--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--calib", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--csv", default=None, help="write the table here too")
    args = p.parse_args()
    import torch

    import cnnzoo

    torch.set_num_threads(args.threads)
    (xt, yt), (xv, yv) = load(Path(args.data))
    # The calibration images: a seeded choice among the training images, never held-out ones.
    calib = xt[torch.randperm(len(xt), generator=torch.Generator().manual_seed(1))[:args.calib]]
    rows = []
    for name in args.models.split(","):
        start = time.perf_counter()
        model = train(name, (xt, yt), args.epochs, args.batch_size, args.lr, args.seed)
        fp32 = predict(model, xv)
        row = {"model": name, "epochs": args.epochs, "train_s": round(time.perf_counter() - start),
               "held_out": len(xv), "calibration_images": args.calib,
               "fp32_top1": round(100 * float((fp32 == yv).float().mean()), 2)}
        for backend in BACKENDS:
            q8 = cnnzoo.quantize(model, calib, backend=backend)
            int8 = predict(q8, xv)
            row[f"{backend}_int8_top1"] = round(100 * float((int8 == yv).float().mean()), 2)
            row[f"{backend}_agreement"] = round(100 * float((int8 == fp32).float().mean()), 2)
            row[f"{backend}_drop"] = round(row["fp32_top1"] - row[f"{backend}_int8_top1"], 2)
        print(", ".join(f"{k}={v}" for k, v in row.items()), flush=True)
        rows.append(row)
    print("| " + " | ".join(rows[0]) + " |\n|" + " --- |" * len(rows[0]))
    for r in rows:
        print("| " + " | ".join(str(v) for v in r.values()) + " |")
    if args.csv:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from results import write_rows
        write_rows(args.csv, rows, threads=args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
