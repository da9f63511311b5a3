"""Kill -9 at random steps, resume, and compare with an uninterrupted run, bit for bit.

Each trial trains LeNet-5 on a small generated image folder (random-resized crops and flips, so
every random number generator a resume must restore is in play) in a `cnnzoo train` process,
checkpointing every few steps; the harness waits for a seeded random step, sends SIGKILL,
resumes with `cnnzoo train --resume`, and repeats until the run finishes. The final weights must
equal those of the uninterrupted run exactly (CPU, --deterministic), and every resume must start
from the newest checkpoint, so at most the steps since it are trained again.

    PYTHONPATH=src python bench/kill_resume.py [--trials 20] [--seed 0]

tests/test_kill_resume.py runs the same harness with a few kills.
"""
from __future__ import annotations

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CLASSES = {"red": (220, 30, 30), "green": (30, 160, 30), "blue": (20, 20, 120)}
PER_CLASS, SIDE = 16, 20
BATCH, EPOCHS, SAVE_EVERY = 6, 3, 2
# 48 images, a quarter held out: 36 to train on, 6 steps per epoch.
STEPS_PER_EPOCH = 6


def make_data(root: Path, seed: int = 0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name, colour in CLASSES.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(PER_CLASS):
            noise = rng.integers(-40, 40, size=(SIDE, SIDE, 3))
            pixels = np.clip(np.array(colour)[None, None] + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def train_args(data: Path, run: Path) -> list[str]:
    return ["train", "lenet5", "--data", str(data), "-o", str(run), "--val-split", "0.25",
            "--epochs", str(EPOCHS), "-b", str(BATCH), "--opt", "sgd", "--lr", "0.05",
            "--deterministic", "--threads", "1", "--save-every", str(SAVE_EVERY)]


def resume_args(run: Path) -> list[str]:
    return ["train", "--resume", str(run), "--threads", "1"]


def cli(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen([sys.executable, "-m", "cnnzoo.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def checkpoint_step(run: Path) -> int | None:
    """Global step of the run's newest complete checkpoint (None before the first)."""
    from safetensors import safe_open

    try:
        with safe_open(str(run / "last.safetensors"), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception:  # not written yet
        return None
    return int(meta["epoch"]) * STEPS_PER_EPOCH + int(meta.get("step", "0"))


def run_with_kills(data: Path, run: Path, rng: random.Random, kills: int,
                   timeout: float = 120.0) -> dict:
    """Train into ``run``, killing the process at ``kills`` random steps; returns what happened."""
    total = EPOCHS * STEPS_PER_EPOCH
    args, done_kills, resumed_at, outputs = train_args(data, run), 0, [], []
    while True:
        proc = cli(args)
        # A step after the newest checkpoint (0: before the first one, once the folder exists).
        first = 0 if not resumed_at else resumed_at[-1] + 1
        target = rng.randint(first, total - 1) if done_kills < kills and first < total else None
        delay = rng.random() * 0.03  # land anywhere in the steps after that checkpoint
        deadline = time.monotonic() + timeout
        killed = False
        while proc.poll() is None:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"training did not finish in {timeout} s")
            step = checkpoint_step(run)
            if target is not None and (step or 0) >= target and (run / "config.json").exists():
                time.sleep(delay)
                proc.send_signal(signal.SIGKILL)
                killed = True
                break
            time.sleep(0.002)
        out, err = proc.communicate()
        outputs.append(out)
        if killed and proc.returncode == -signal.SIGKILL:
            done_kills += 1
            saved = checkpoint_step(run) or 0
            args = resume_args(run)
            resumed_at.append(saved)
            continue
        if proc.returncode != 0:
            raise RuntimeError(f"cnnzoo exited {proc.returncode}: {err.strip()}")
        break
    # Each resume that got as far as saying so started from the newest checkpoint.
    starts = [_resume_point(o) for o in outputs[1:]]
    return {"kills": done_kills, "resumed_at": resumed_at, "announced": starts,
            "newest": all(a is None or a == r for a, r in zip(starts, resumed_at))
            and (not starts or starts[-1] == resumed_at[-1])}


def _resume_point(stdout: str) -> int | None:
    m = re.search(r"resuming .* at epoch (\d+), step (\d+)", stdout)
    if m:
        return (int(m.group(1)) - 1) * STEPS_PER_EPOCH + int(m.group(2))
    m = re.search(r"resuming .* after epoch (\d+)", stdout)
    if m:
        return int(m.group(1)) * STEPS_PER_EPOCH
    return 0 if "starting it over" in stdout else None


def same_weights(a: Path, b: Path) -> bool:
    from safetensors.torch import load_file

    wa, wb = load_file(str(a / "last.safetensors")), load_file(str(b / "last.safetensors"))
    return wa.keys() == wb.keys() and all(bool((wa[k] == wb[k]).all()) and
                                          wa[k].dtype == wb[k].dtype for k in wa)


def reference_run(data: Path, run: Path) -> None:
    proc = cli(train_args(data, run))
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"reference run failed: {err.strip()}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kills", type=int, default=1, help="kills per trial")
    args = p.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = make_data(tmp / "data")
        reference_run(data, tmp / "reference")
        passed, repeated, start = 0, [], time.perf_counter()
        for trial in range(args.trials):
            run = tmp / f"trial{trial}"
            info = run_with_kills(data, run, rng, args.kills)
            equal = same_weights(tmp / "reference", run)
            newest = info["newest"]
            passed += equal and newest
            print(f"trial {trial + 1:2d}: killed {info['kills']}x after checkpoint step(s) "
                  f"{info['resumed_at']}, resumed from {info['announced']}; weights "
                  f"{'bit-identical' if equal else 'DIFFER'}", flush=True)
        print(f"{passed}/{args.trials} trials ended with the uninterrupted run's weights, each "
              f"resuming from its newest checkpoint (checkpoint every {SAVE_EVERY} steps, "
              f"{EPOCHS * STEPS_PER_EPOCH} steps per run); {time.perf_counter() - start:.0f} s")
    return 0 if passed == args.trials else 1


if __name__ == "__main__":
    sys.exit(main())
