"""LeNet-5 on scikit-learn's digits with 20% held out: the acceptance bar is >= 98% top-1.

This is what `make run` does, through the same command. Run from the repository root:

    PYTHONPATH=src python bench/train_lenet_digits.py [--epochs N]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--lr", type=float, default=0.05)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cnnzoo.cli", "train", "lenet5", "--data", "digits",
                        "--val-split", "0.2", "--epochs", str(args.epochs), "--lr", str(args.lr),
                        "--threads", "1",
                        "-o", str(run)], check=True)
        wall = time.perf_counter() - start
        proc = subprocess.run([sys.executable, "-m", "cnnzoo.cli", "eval", "lenet5", "--weights",
                               str(run / "last.safetensors"), "--json", "-o",
                               str(Path(tmp) / "cm.png")], check=True, capture_output=True,
                              text=True)
    top1 = json.loads(proc.stdout)["top1"]
    ok = top1 >= 98.0
    print(f"lenet5 on digits (20% held out, {args.epochs} epochs): top-1 {top1:.2f}% (bar 98%), "
          f"train wall {wall:.1f} s: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
