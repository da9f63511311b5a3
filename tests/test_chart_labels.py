"""Chart labels: the names written beside markers never cover each other or another marker."""
from __future__ import annotations

import itertools
import random

import pytest

from cnnzoo.inspect.interactive import _axis_px, _overlap, log_ticks, place_labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_placed_labels_cover_no_other_label_and_no_marker(seed):
    rng = random.Random(seed)
    # A crowded chart: 80 models over five decades of MACs and 40 points of top-1.
    pts = [(10 ** rng.uniform(-3, 2), rng.uniform(50, 90), f"model_{i}" + "x" * (i % 7),
            rng.uniform(2.5, 20)) for i in range(80)]
    x_range, y_range, w, h = (1e-3, 1e2), (50, 90), 900, 470
    placed = place_labels(pts, x_range, y_range, True, False, w, h)
    assert 10 < len(placed) < len(pts)  # crowded: some names are left to the hover
    boxes = [p[5] for p in placed]
    for a, b in itertools.combinations(boxes, 2):
        assert not _overlap(a, b)
    for x, y, _, r in pts:
        px, py = _axis_px(x, *x_range, True, w), _axis_px(y, *y_range, False, h)
        marker = (px - r, py - r, px + r, py + r)
        assert not any(_overlap(box, marker) for box in boxes)
    for box in boxes:
        assert 0 <= box[0] and box[2] <= w and 0 <= box[1] and box[3] <= h


def test_log_ticks_are_written_in_full_and_thin_out_over_many_decades():
    short = log_ticks(3, 90)
    assert short["ticktext"] == ["5", "10", "20", "50"]
    wide = log_ticks(2e-4, 150)
    assert wide["ticktext"] == ["0.001", "0.01", "0.1", "1", "10", "100"]
