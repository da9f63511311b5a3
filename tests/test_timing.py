"""timing.race: candidates timed in turns, in a rotating order, each turn prepared; no real time."""
from __future__ import annotations

import pytest

from cnnzoo.perf.timing import race, round_ratios


def _recorder(costs: dict[str, float]):
    """Runs that log their name and advance a fake clock by their cost."""
    log: list[str] = []
    now = [0.0]

    def make(name: str):
        def run():
            log.append(name)
            now[0] += costs[name]
        return run
    return {n: make(n) for n in costs}, log, (lambda: now[0])


def test_race_rotates_the_order_round_by_round():
    runs, log, clock = _recorder({"a": 1.0, "b": 2.0, "c": 3.0})
    per_step = race(runs, rounds=3, steps=1, warmup=1, clock=clock)
    assert log == ["a", "b", "c",          # warm-up, in order
                   "a", "b", "c",          # round 0
                   "b", "c", "a",          # round 1 starts one later
                   "c", "a", "b"]          # round 2
    assert per_step == {"a": [1.0] * 3, "b": [2.0] * 3, "c": [3.0] * 3}


def test_race_times_only_timed_steps_and_prepares_every_turn():
    runs, log, clock = _recorder({"a": 1.0, "b": 5.0})
    prepared = []
    per_step = race(runs, rounds=2, steps=2, warmup=0, turn_warmup=1, clock=clock,
                    prepare={"a": lambda: prepared.append("a"),
                             "b": lambda: prepared.append("b")})
    # Each turn: one untimed step, then two timed ones.
    assert log == ["a"] * 3 + ["b"] * 3 + ["b"] * 3 + ["a"] * 3
    assert per_step == {"a": [1.0] * 4, "b": [5.0] * 4}
    # Before the warm-up of each, then before every turn.
    assert prepared == ["a", "b", "a", "b", "b", "a"]


def test_a_lone_candidate_is_prepared_once():
    runs, log, clock = _recorder({"only": 2.0})
    prepared = []
    race(runs, rounds=3, warmup=1, clock=clock, prepare={"only": lambda: prepared.append(1)})
    assert prepared == [1] and log == ["only"] * 4


def test_drift_on_a_shared_machine_falls_on_every_candidate():
    # Two candidates of equal cost on a machine that slows down step after step: timed one
    # after the other, the first always looks faster; in turns, each sees early and late steps.
    calls = [0]
    now = [0.0]

    def run():
        calls[0] += 1
        now[0] += 1.0 + 0.1 * calls[0]

    per_step = race({"a": run, "b": run}, rounds=4, warmup=0, clock=lambda: now[0])
    mean = {n: sum(v) / len(v) for n, v in per_step.items()}
    assert mean["a"] == pytest.approx(mean["b"])


def test_round_ratios_pair_the_turns_of_each_round():
    # A machine that halves its speed after round 0: each round's ratio still says b is twice
    # as fast, though b's slow-round steps are as slow as a's fast ones.
    per_step = {"a": [2.0, 2.0, 4.0, 4.0], "b": [1.0, 1.0, 2.0, 2.0]}
    assert round_ratios(per_step, "a", "b", steps=2) == [2.0, 2.0]
    assert round_ratios(per_step, "b", "a", steps=1) == [0.5] * 4
    with pytest.raises(ValueError):
        round_ratios({"a": [1.0, 1.0, 1.0], "b": [1.0, 1.0, 1.0]}, "a", "b", steps=2)
