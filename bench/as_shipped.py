"""cnnzoo eager against timm eager, each run as its users run it: in a fresh process of its own.

``bench/peers.py`` runs every library in one process, so whatever the process has, they all
share. What differs between the libraries as shipped is memory: ``import cnnzoo`` asks torch's
CPU allocator for transparent huge pages and fixes glibc's heap thresholds (see
``cnnzoo/__init__.py``), ``import timm`` does neither. Here each model runs in a new process
per round, cnnzoo's and timm's alternating, same batch, resolution, threads and timm's own
model; the ratio is the median over rounds of the paired ratios, with their range.
``--same-allocator`` gives timm's process both too, which shows the models alone (it should
agree with peers.py).

    PYTHONPATH=src python bench/as_shipped.py --threads 2
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# Not imported from peers.py, which imports cnnzoo: timm's process must never load cnnzoo first.
MODELS = {  # cnnzoo name -> (timm name, input side)
    "resnet50": ("resnet50", 224),
    "mobilenet_v2": ("mobilenetv2_100", 224),
    "mobilenet_v3_large": ("mobilenetv3_large_100", 224),
    "efficientnet_b0": ("efficientnet_b0", 224),
    "densenet121": ("densenet121", 224),
    "vgg16": ("vgg16", 224),
    "inception_v3": ("inception_v3", 299),
}


def child(spec: dict) -> None:
    """Time one model in this process and print its median step in seconds (JSON)."""
    if spec["lib"] == "cnnzoo":
        import cnnzoo  # first, as its users do: before torch
        import torch
        model = cnnzoo.create_model(spec["model"])
    else:
        import timm
        import torch
        model = timm.create_model(MODELS.get(spec["model"], (spec["model"], 224))[0])
        if spec["same_allocator"]:
            import cnnzoo  # noqa: F401 - after torch: its heap thresholds, not its models
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    side = MODELS.get(spec["model"], (None, 224))[1]
    x = torch.randn(spec["batch"], 3, side, side)
    model.eval()
    times = []
    with torch.inference_mode():
        for i in range(spec["warmup"] + spec["steps"]):
            t = time.perf_counter()
            model(x)
            if i >= spec["warmup"]:
                times.append(time.perf_counter() - t)
    # Importing cnnzoo now (for the probes) keeps the heap from here on: say how it was timed.
    timed_with_heap = "cnnzoo" in sys.modules
    from cnnzoo.perf.memory import heap_kept, torch_asks_for_huge_pages
    print(json.dumps({"seconds": statistics.median(times),
                      "huge_pages": torch_asks_for_huge_pages(),
                      "heap_kept": timed_with_heap and heap_kept()}))


def run_child(spec: dict) -> dict:
    env = dict(os.environ)
    env.pop("THP_MEM_ALLOC_ENABLE", None)  # each library's own default
    if spec["same_allocator"]:
        env["THP_MEM_ALLOC_ENABLE"] = "1"
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("-b", "--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--same-allocator", action="store_true",
                   help="give timm's process huge pages and cnnzoo's heap thresholds too")
    args = p.parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return 0
    ratios_all = []
    print("| model | cnnzoo s/step | timm s/step | cnnzoo/timm | range | "
          "huge pages, heap kept: cnnzoo; timm |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        spec = {"model": name, "batch": args.batch_size, "threads": args.threads,
                "steps": args.steps, "warmup": args.warmup, "same_allocator": args.same_allocator}
        zoo, peer, ratios = [], [], []
        for r in range(args.rounds):
            order = ("cnnzoo", "timm") if r % 2 == 0 else ("timm", "cnnzoo")
            got = {lib: run_child({**spec, "lib": lib}) for lib in order}
            zoo.append(got["cnnzoo"]["seconds"])
            peer.append(got["timm"]["seconds"])
            ratios.append(got["timm"]["seconds"] / got["cnnzoo"]["seconds"])
        ratio = statistics.median(ratios)
        ratios_all.append(ratio)
        pages = "; ".join(f"{got[lib]['huge_pages']}, {got[lib]['heap_kept']}"
                          for lib in ("cnnzoo", "timm"))
        print(f"| {name} | {statistics.median(zoo):.3f} | {statistics.median(peer):.3f} | "
              f"{ratio:.3f} | {min(ratios):.2f}-{max(ratios):.2f} | {pages} |", flush=True)
    geo = statistics.geometric_mean(ratios_all)
    print(f"geometric mean cnnzoo/timm: {geo:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
