"""Which registered models ``cnnzoo.quantize`` takes, with each backend: every model, BatchNorm
statistics randomised (fresh ones are identities), calibrated on one batch of 16 random images
at a small size (the model's fixed size, else 64, or its minimum; where the ONNX exporter cannot
express a layer at that size, AlexNet's 6x6 adaptive pool over 1x1 maps, the model's own size),
and scored by the cosine
between its int8 and fp32 logits on that batch. PT2E is run as its converted graph
(``reference``): the export, the quantizer's annotation and the conversion are what can fail;
inductor's compile of it is timed by bench/peers.py --int8.

    PYTHONPATH=src python bench/int8_models.py [--models 'resnet*'] [--csv FILE]
"""
from __future__ import annotations

import argparse
import csv
import sys
import time


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="*", help="a registry pattern")
    p.add_argument("--backends", default="onnxruntime,reference")
    p.add_argument("--csv", default=None)
    args = p.parse_args()
    import torch

    import cnnzoo
    from cnnzoo.registry import default_cfg

    rows = []
    for name in cnnzoo.list_models(args.models):
        cfg = default_cfg(name)
        c, h, _ = cfg.input_size
        side = h if cfg.fixed_size else max(cfg.min_size, 64)
        torch.manual_seed(0)
        model = cnnzoo.create_model(name).eval()
        g = torch.Generator().manual_seed(0)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        x = torch.randn(16, c, side, side, generator=g)
        with torch.no_grad():
            ref = model(x)
        row = {"model": name, "img_size": side}
        for backend in args.backends.split(","):
            start = time.perf_counter()
            try:
                try:
                    q8 = cnnzoo.quantize(model, x, backend=backend)
                except Exception as exc:  # noqa: BLE001
                    if "not factor of input size" not in str(exc):
                        raise
                    side = h
                    row["img_size"] = side
                    x = torch.randn(16, c, side, side, generator=g)
                    with torch.no_grad():
                        ref = model(x)
                    q8 = cnnzoo.quantize(model, x, backend=backend)
                cos = float(torch.nn.functional.cosine_similarity(q8(x), ref).min())
                row[f"{backend}_cosine"] = round(cos, 4)
                floats = "; ".join(f"{n} {k}" for k, n in q8.report.float_ops.items())
                row[f"{backend}_float"] = floats
            except Exception as exc:  # noqa: BLE001 - the table records why
                row[f"{backend}_cosine"] = ""
                row[f"{backend}_float"] = "FAILED: " + (str(exc).splitlines() or ["?"])[0][:160]
            row[f"{backend}_s"] = round(time.perf_counter() - start, 1)
        print(", ".join(f"{k}={v}" for k, v in row.items()), flush=True)
        rows.append(row)
    failed = [r["model"] for r in rows if any(str(v).startswith("FAILED") for v in r.values())]
    print(f"{len(rows)} models; with a backend that failed: {', '.join(failed) or 'none'}")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
