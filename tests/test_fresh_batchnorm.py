"""layers/norm.BatchNorm2d: in place only where the block said its input is new, and only then."""
from __future__ import annotations

import pytest
import torch
from torch import fx, nn

from cnnzoo.layers.conv_norm_act import ConvNormAct
from cnnzoo.layers.norm import BatchNorm2d
from cnnzoo.layers.pool import LayerTracer
from cnnzoo.perf.fold import fold_batchnorm

BIG = (2, 8, 1024, 520)  # 34 MB of float32: above glibc's default 32 MiB mmap ceiling
SMALL = (2, 8, 16, 16)


def _pair(fresh: bool) -> tuple[BatchNorm2d, nn.BatchNorm2d]:
    torch.manual_seed(0)
    ref = nn.BatchNorm2d(8)
    ref.running_mean.normal_()
    ref.running_var.uniform_(0.5, 2.0)
    ref.weight.data.normal_()
    ref.bias.data.normal_()
    ours = BatchNorm2d(8, fresh_input=fresh)
    ours.load_state_dict(ref.state_dict())
    return ours.eval(), ref.eval()


@pytest.mark.parametrize("shape", [BIG, SMALL])
def test_fresh_input_is_normalised_in_place_to_torchs_very_bits(shape):
    ours, ref = _pair(fresh=True)
    x = torch.randn(shape)
    with torch.inference_mode():
        expected = ref(x)
        out = ours(x)
    assert out.data_ptr() == x.data_ptr()
    assert torch.equal(out, expected)  # torch's kernel, written into x


def test_channels_last_input_in_place_too():
    ours, ref = _pair(fresh=True)
    x = torch.randn(BIG).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        expected = ref(x)
        out = ours(x)
    assert out.data_ptr() == x.data_ptr()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_inputs_not_declared_fresh_or_needing_grad_are_left_alone():
    for fresh, shape, grad in ((False, BIG, False), (False, SMALL, False), (True, SMALL, True),
                               (True, BIG, True)):
        ours, ref = _pair(fresh)
        x = torch.randn(shape)
        kept = x.clone()
        with torch.set_grad_enabled(grad):
            out = ours(x)
        assert out.data_ptr() != x.data_ptr() and torch.equal(x, kept)
        torch.testing.assert_close(out, ref(kept), rtol=1e-5, atol=1e-5)


def test_training_mode_uses_batch_statistics():
    ours, ref = _pair(fresh=True)
    ours.train(), ref.train()
    x = torch.randn(BIG)
    with torch.no_grad():
        torch.testing.assert_close(ours(x.clone()), ref(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.running_mean, ref.running_mean)


def test_conv_norm_act_declares_its_norm_fresh_and_still_folds():
    block = ConvNormAct(3, 8, 3).eval()
    assert type(block.bn) is BatchNorm2d and block.bn.fresh_input
    gm = fx.GraphModule(block, LayerTracer().trace(block))
    assert [n.target for n in gm.graph.nodes if n.op == "call_module"] == ["conv", "bn", "act"]
    x = torch.randn(2, 3, 10, 10)
    ref = block(x)
    assert fold_batchnorm(block) == [("conv", "bn")]
    torch.testing.assert_close(block(x), ref, rtol=1e-5, atol=1e-5)
