"""perf/dense_buffer.py: DenseNet blocks on one buffer, for optimize (nothing timed)."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from cnnzoo import create_model
from cnnzoo.models.densenet import DenseBlock, DenseNet
from cnnzoo.perf import optimize
from cnnzoo.perf.dense_buffer import BufferedDenseBlock, buffer_dense_blocks
from cnnzoo.perf.fold import fold_batchnorm
from cnnzoo.perf.preact import ClampPerChannel, fold_preactivation

from conftest import randomise_bn


def _small_densenet() -> nn.Module:
    # Two blocks of three layers: a transition between them, and a final BN after the last.
    return randomise_bn(DenseNet(growth_rate=8, block_config=(3, 3), stem_width=16,
                                 num_classes=10))


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_buffered_blocks_give_the_concatenating_blocks_outputs(layout):
    model = _small_densenet()
    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=layout)
    with torch.no_grad():
        ref = model(x)
        fast = copy.deepcopy(model)
        assert buffer_dense_blocks(fast) == 2
        assert not any(type(m) is DenseBlock for m in fast.modules())
        # The names stay: weights and feature hooks reach the same modules.
        assert fast.state_dict().keys() == model.state_dict().keys()
        out = fast(x)
    # BatchNorm reads a strided prefix where it read a dense cat: its kernel rounds differently.
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    block = fast.stages[0].block
    with torch.no_grad():
        made = block(fast.stem(x))
    assert made.shape[1] == block.out_channels
    assert made.is_contiguous(memory_format=layout)


def test_the_folded_clamps_read_the_buffer_out_of_place():
    model = _small_densenet()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        fold_batchnorm(model)
        buffer_dense_blocks(model)
        fold_preactivation(model)
        out = model(x)
    clamps = [m for n, m in model.named_modules() if n.endswith("norm1")]
    assert len(clamps) == 6 and all(isinstance(c, ClampPerChannel) for c in clamps)
    # In place, a layer's clamp would overwrite the maps of the layers before it in the buffer.
    assert not any(c.inplace for c in clamps)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_only_eval_mode_cnnzoo_dense_blocks_are_replaced():
    model = DenseNet(growth_rate=8, block_config=(2, 2), stem_width=16).train()
    assert buffer_dense_blocks(model) == 0  # autograd could not keep views of a filling buffer
    assert buffer_dense_blocks(create_model("resnet18").eval()) == 0


def test_optimize_buffers_densenet_and_reports_it():
    model = _small_densenet()
    x = torch.randn(2, 3, 64, 64)
    fast = optimize(model, example=x, fold_bn=True, channels_last=False, onednn=True,
                    micro_batch=None)
    assert fast.report.buffered == 2
    assert "2 dense blocks on one buffer each" in fast.report.describe()
    assert sum(isinstance(m, BufferedDenseBlock) for m in fast.model.modules()) == 2
    assert type(model.stages[0].block) is DenseBlock  # the caller's model is a copy's source
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-5)
    plain = optimize(model, example=x, fold_bn=False, channels_last=False, onednn=False,
                     micro_batch=None)
    assert plain.report.buffered == 0  # no clamp to do the copy: the blocks stay as they are
