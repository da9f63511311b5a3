"""Deformable convolutions are counted: their conv, their offset conv and the bilinear sampling."""
from __future__ import annotations

import pytest
from torch import nn

from cnnzoo.inspect.atlas import measure
from cnnzoo.inspect.build import build
from cnnzoo.inspect.counts import count_macs
from cnnzoo.inspect.summary import summary
from cnnzoo.layers.deform_conv import DeformConv2d


class _One(nn.Module):
    def __init__(self, layer, side):
        super().__init__()
        self.layer = layer
        self.default_cfg = {"input_size": (layer.in_channels, side, side)}

    def forward(self, x):
        return self.layer(x)


# Hand counts for an 8-channel 10x10 input and a 3x3 kernel (9 taps):
#   offset conv  out_chs x Ho x Wo x in_chs x 9   (out_chs = 27 for v2: dy, dx, mask; 18 for v1)
#   deform conv  16 x Ho x Wo x (8 / groups) x 9
#   sampling     8 x Ho x Wo x 9 x (4 bilinear neighbours + 1 for v2's mask)
@pytest.mark.parametrize("modulated, stride, groups, expected", [
    (True, 1, 1, 27 * 100 * 8 * 9 + 16 * 100 * 8 * 9 + 8 * 100 * 9 * 5),
    (False, 1, 1, 18 * 100 * 8 * 9 + 16 * 100 * 8 * 9 + 8 * 100 * 9 * 4),
    (True, 2, 2, 27 * 25 * 8 * 9 + 16 * 25 * 4 * 9 + 8 * 25 * 9 * 5),
])
def test_deform_conv_macs_match_a_hand_count(modulated, stride, groups, expected):
    layer = DeformConv2d(8, 16, 3, stride=stride, groups=groups, modulated=modulated)
    model = _One(layer, 10)
    assert count_macs(model, (8, 10, 10)) == expected
    assert summary(model, (8, 10, 10)).macs == expected


def test_dcn_resnet50_costs_more_than_resnet50_in_summary_and_atlas():
    dcn, plain = (summary(build(name)[0]).macs for name in ("dcn_resnet50", "resnet50"))
    assert dcn > plain
    rows = {name: measure(name, latency=False)[0] for name in ("dcn_resnet50", "resnet50")}
    assert rows["dcn_resnet50"].macs == dcn
    assert rows["dcn_resnet50"].macs > rows["resnet50"].macs == plain
