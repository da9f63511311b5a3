"""The evolution of the block: the numbers beside each block, checked against hand counts."""
from __future__ import annotations

import pytest

from cnnzoo import model_card
from cnnzoo.inspect.blocks import BLOCKS, Cost, evolution_of_the_block, measure_block

SPEC = {s.key: s for s in BLOCKS}


def bn(*widths: int) -> int:
    return sum(2 * w for w in widths)  # a BatchNorm's weight and bias per channel


def test_bottleneck_counts_by_hand_and_against_a_basic_block_of_equal_width():
    row = measure_block(SPEC["bottleneck"])
    c, m, hw = 256, 64, 56 * 56  # resnet50's second block: 256 -> 64 -> 64 -> 256 at 56x56
    weights = c * m + 3 * 3 * m * m + m * c
    assert row.input_shape == (c, 56, 56) and row.output_shape == (c, 56, 56)
    assert row.cost == Cost(weights + bn(m, m, c), weights * hw)
    (vs_basic,) = row.comparisons
    basic = 2 * 3 * 3 * c * c
    assert vs_basic.theirs == Cost(basic + bn(c, c), basic * hw)
    assert vs_basic.ours == row.cost
    assert 0.05 < vs_basic.params_ratio < 0.07  # the bottleneck is ~17x cheaper at this width


def test_inverted_residual_counts_by_hand_and_against_a_full_3x3_at_its_expanded_width():
    row = measure_block(SPEC["inverted"])
    c, m, hw = 24, 24 * 6, 56 * 56  # mobilenet_v2: 24 -> expand 6x -> depthwise -> 24
    weights = c * m + 3 * 3 * m + m * c
    assert row.input_shape == (c, 56, 56) and row.output_shape == (c, 56, 56)
    assert row.cost == Cost(weights + bn(m, m, c), weights * hw)
    (vs_full,) = row.comparisons
    assert vs_full.theirs == Cost(3 * 3 * m * m, 3 * 3 * m * m * hw)


def test_depthwise_separable_against_a_full_3x3_by_hand():
    row = measure_block(SPEC["separable"])
    cin, cout, hw_out = 64, 128, 56 * 56  # mobilenet_v1's stride-2 block at 112x112
    (vs_full,) = row.comparisons
    assert vs_full.ours == Cost(9 * cin + cin * cout, (9 * cin + cin * cout) * hw_out)
    assert vs_full.theirs == Cost(9 * cin * cout, 9 * cin * cout * hw_out)
    assert row.cost.macs == vs_full.ours.macs  # the block is exactly that pair, plus BN


def test_two_3x3_convs_against_one_5x5_at_equal_width():
    row = measure_block(SPEC["inception-bn"])
    equal = row.comparisons[-1]
    assert equal.ours.params * 25 == equal.theirs.params * 18


@pytest.fixture(scope="module")
def rows():
    return evolution_of_the_block()


def test_every_block_is_drawn_from_its_model_in_year_order(rows):
    assert [r.year for r in rows] == sorted(r.year for r in rows)
    assert {r.key for r in rows} == set(SPEC)
    for r in rows:
        assert r.year == model_card(r.model).year
        assert r.cost.params > 0 and r.cost.macs > 0, r.key
        assert "input" in r.dot and "×".join(map(str, r.input_shape)) in r.dot, r.key
        for c in r.comparisons:
            assert c.ours.params > 0 and c.theirs.params > 0, (r.key, c.text)
    # What each replaced, it undercuts: these are the savings the papers claim.
    saving = {r.key: r.comparisons[0] for r in rows if r.comparisons}
    for key in ("inception-bn", "bottleneck", "grouped", "separable", "dilated", "inverted"):
        assert saving[key].params_ratio < 1 and saving[key].macs_ratio < 1, key
    assert saving["fused"].macs_ratio > 1  # fused MBConv spends MACs to save memory traffic
