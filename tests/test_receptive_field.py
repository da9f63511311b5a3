"""Theoretical receptive fields per stage, against values computed by hand."""
from __future__ import annotations

import torch
from torch import nn

from cnnzoo import create_model
from cnnzoo.cli import main
from cnnzoo.inspect.graph import trace
from cnnzoo.inspect.receptive_field import propagate, stage_receptive_fields


def rf_of(name: str):
    with torch.device("meta"):
        model = create_model(name)
    return stage_receptive_fields(model)


def test_vgg16_stage_receptive_fields_match_hand_computation():
    # size += (k - 1) * jump per layer, jump *= stride. Stage 1: two 3x3 (1+2+2 = 5), 2x2/2
    # pool (+1) = 6, jump 2. Stage 2: 6+4+4 = 14, pool +2 = 16, jump 4. Stage 3: 16+3*8 = 40,
    # pool +4 = 44, jump 8. Stage 4: 44+3*16 = 92, +8 = 100, jump 16. Stage 5: 100+3*32 = 196,
    # +16 = 212, jump 32.
    rows = rf_of("vgg16")
    assert [r.size for r in rows] == [6, 16, 44, 100, 212]
    assert [r.jump for r in rows] == [2, 4, 8, 16, 32]
    assert [r.stride for r in rows] == [2, 2, 2, 2, 2]


def test_resnet50_stage_receptive_fields_match_hand_computation():
    # Stem 7x7/2: 7, jump 2. Max-pool 3x3/2: 7+2*2 = 11, jump 4. Stage 1, three bottlenecks with
    # one 3x3 each: 11+3*2*4 = 35. Stage 2 (stride on the 3x3, 'v1.5'): 35+2*4 = 43, jump 8,
    # then 3 more: 43+3*16 = 91. Stage 3: 91+2*8 = 107, jump 16, then 5 more: 107+5*32 = 267.
    # Stage 4: 267+2*16 = 299, jump 32, then 2 more: 299+2*64 = 427. The projection shortcuts
    # (1x1) see less, so the residual branch sets the field.
    rows = rf_of("resnet50")
    assert [r.module for r in rows] == ["stem.act", "stages.0", "stages.1", "stages.2", "stages.3"]
    assert [r.size for r in rows] == [7, 35, 91, 267, 427]
    assert [r.jump for r in rows] == [2, 4, 8, 16, 32]
    assert [r.shape[1] for r in rows] == [112, 56, 28, 14, 7]


class _TwoPaths(nn.Module):
    """A 1x1 path and a dilated 3x3 path added: the field is the larger of the two."""

    def __init__(self):
        super().__init__()
        self.short = nn.Conv2d(3, 4, 1)
        self.long = nn.Sequential(nn.Conv2d(3, 4, 3, padding=2, dilation=2),
                                  nn.Conv2d(4, 4, 3, stride=2, padding=1))
        self.pool = nn.AdaptiveAvgPool2d(4)

    def forward(self, x):
        return self.pool(self.long(x) + nn.functional.max_pool2d(self.short(x), 2))


def test_dilation_branches_and_adaptive_pooling_follow_the_formula():
    graph = trace(_TwoPaths(), (3, 32, 32), atomic=False)
    rf = propagate(graph)
    by_target = {n.target: rf[n.name] for n in graph.nodes}
    assert by_target["long.0"] == (5, 1)        # 3x3 dilated by 2 spans 5 pixels
    assert by_target["long.1"] == (7, 2)        # + (3 - 1) * 1
    assert by_target["max_pool2d"] == (2, 2)    # the 1x1 path, pooled 2x2/2
    assert by_target["add"] == (7, 2)           # paths meet: the larger field wins
    assert by_target["pool"] == (7 + 3 * 2, 8)  # 16 -> 4: a window of 4, stride 4


def test_cli_summary_rf_prints_the_stage_table(capsys):
    assert main(["summary", "vgg16", "--depth", "0", "--rf"]) == 0
    out = capsys.readouterr().out
    assert "receptive field" in out
    assert "212" in out and "stages.4" in out
