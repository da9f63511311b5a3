"""inspect/meta.py: BatchNorm on meta tensors answered at once, with torch's own result's shape."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from cnnzoo import create_model
from cnnzoo.inspect.counts import count_macs
from cnnzoo.inspect.meta import meta_norms


class _Seen(TorchDispatchMode):
    """Records every op that reaches it (it sits outside the mode under test)."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_inference_batchnorm_on_meta_skips_torch_and_keeps_its_shape_and_strides(layout):
    bn = nn.BatchNorm2d(8, device="meta").eval()
    x = torch.zeros(2, 8, 5, 7, device="meta").contiguous(memory_format=layout)
    with torch.no_grad():
        ref = bn(x)
        with _Seen() as seen, meta_norms("meta"):
            out = bn(x)
    assert torch.ops.aten.native_batch_norm.default not in seen.ops
    assert (out.shape, out.stride(), out.dtype, out.device) == \
        (ref.shape, ref.stride(), ref.dtype, ref.device)
    # Without it, the op reaches torch (and its slow meta decomposition).
    with torch.no_grad(), _Seen() as seen:
        bn(x)
    assert torch.ops.aten.native_batch_norm.default in seen.ops


def test_training_batchnorm_and_real_tensors_go_to_torch():
    bn = nn.BatchNorm2d(4, device="meta").train()
    x = torch.zeros(2, 4, 3, 3, device="meta")
    with _Seen() as seen, meta_norms("meta"):
        bn(x)
    assert torch.ops.aten.native_batch_norm.default in seen.ops
    cpu = nn.BatchNorm2d(4).eval()
    cpu.running_mean.fill_(1.0)
    x = torch.randn(2, 4, 3, 3)
    with torch.no_grad(), meta_norms("meta"):
        out = cpu(x)
    torch.testing.assert_close(out, (x - 1) / torch.sqrt(torch.tensor(1 + cpu.eps)))
    assert not isinstance(meta_norms("cpu"), TorchDispatchMode)  # a no-op off meta


def test_macs_counted_on_meta_equal_the_macs_counted_on_real_tensors():
    with torch.device("meta"):
        meta = create_model("densenet121")
    assert count_macs(meta) == count_macs(create_model("densenet121")) > 2.8e9
