"""Clocks that mean the same thing on every device.

A GPU runs kernels asynchronously: a step ends when the device is done, not when Python returns,
so every timestamp that closes a step waits for the device first. CPU work is synchronous and
needs no wait. The clock is a parameter so tests can drive the harness without timing anything.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

Clock = Callable[[], float]


def _noop() -> None:
    return None


def synchronizer(device: torch.device | str) -> Callable[[], None]:
    """A function that returns once ``device`` has finished the work queued on it."""
    device = torch.device(device)
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    if device.type == "mps":
        return torch.mps.synchronize
    if device.type == "xpu":
        return lambda: torch.xpu.synchronize(device)
    return _noop


def time_steps(step: Callable[[], object], *, warmup: int, steps: int, sync: Callable[[], None],
               clock: Clock = time.perf_counter,
               on_step: Callable[[int, int], None] | None = None) -> tuple[list[float], float]:
    """Run ``step`` ``warmup`` times, then ``steps`` times timed: (per-step seconds, wall seconds).

    Each timed step is closed by ``sync``, as in timm's benchmark, so per-step times are real;
    the wall time spans the whole timed run, which is what samples/s is computed from.
    """
    for i in range(warmup):
        step()
        if on_step:
            on_step(i + 1, warmup + steps)
    sync()
    per_step = []
    t_run = clock()
    for i in range(steps):
        t0 = clock()
        step()
        sync()
        per_step.append(clock() - t0)
        if on_step:
            on_step(warmup + i + 1, warmup + steps)
    return per_step, clock() - t_run


def race(runs: dict[str, Callable[[], object]], *, rounds: int, steps: int = 1, warmup: int = 1,
         turn_warmup: int = 0, sync: Callable[[], None] = _noop, clock: Clock = time.perf_counter,
         prepare: dict[str, Callable[[], None]] | None = None) -> dict[str, list[float]]:
    """Per-step seconds of each of ``runs``, timed in turns: round after round, rotating order.

    Timed one after another, two candidates can trade places on a shared machine (one step of
    the same model measured 765 ms, then 1343 ms, in one process); in turns, drift falls on all
    of them alike. ``prepare[name]``, untimed, puts shared state (a model's memory layout) right
    for ``name`` before each of its turns; ``turn_warmup`` untimed steps then refill the caches
    the previous candidate emptied.
    """
    prepare = prepare or {}
    names = list(runs)
    for name in names:
        if name in prepare:
            prepare[name]()
        for _ in range(warmup):
            runs[name]()
    sync()
    per_step: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names) if names else 0
        for name in names[shift:] + names[:shift]:
            if name in prepare and len(names) > 1:
                prepare[name]()
            for _ in range(turn_warmup):
                runs[name]()
            sync()
            for _ in range(steps):
                t0 = clock()
                runs[name]()
                sync()
                per_step[name].append(clock() - t0)
    return per_step


def round_ratios(per_step: dict[str, list[float]], base: str, other: str,
                 steps: int) -> list[float]:
    """``other``'s speed over ``base``'s, once per round of a ``race`` of ``steps`` steps a turn.

    The two medians of a round were timed seconds apart; across rounds a shared machine can
    drift by more than the difference being measured, so the spread of these ratios says how far
    one figure can be trusted, and their median is steadier than the ratio of overall medians.
    """
    a, b = per_step[base], per_step[other]
    if steps < 1 or len(a) != len(b) or len(a) % steps:
        raise ValueError(f"{base} and {other} need the same whole number of rounds of {steps}")
    return [statistics.median(a[i:i + steps]) / statistics.median(b[i:i + steps])
            for i in range(0, len(a), steps)]
