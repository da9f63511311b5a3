"""DenseNet: torchvision's layout, and memory_efficient checkpointing that changes only memory."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from cnnzoo import create_model


def _copy_weights(src: nn.Module, dst: nn.Module) -> None:
    src_sd, dst_sd = src.state_dict(), dst.state_dict()
    assert [v.shape for v in src_sd.values()] == [v.shape for v in dst_sd.values()]
    dst.load_state_dict(dict(zip(dst_sd, src_sd.values())))


def test_densenet121_loads_torchvision_weights_in_order_and_matches_its_logits():
    torch.manual_seed(0)
    ref = torchvision.models.densenet121(weights=None).eval()
    g = torch.Generator().manual_seed(1)
    for m in ref.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    ours = create_model("densenet121").eval()
    _copy_weights(ref, ours)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)


def _pair(name: str = "densenet121", **kwargs):
    torch.manual_seed(0)
    plain = create_model(name, num_classes=10, **kwargs)
    efficient = create_model(name, num_classes=10, memory_efficient=True, **kwargs)
    efficient.load_state_dict(plain.state_dict())
    return plain.train(), efficient.train()


def _outputs_and_grads(model: nn.Module, x: torch.Tensor):
    x = x.clone().requires_grad_(True)
    out = model(x)
    out.square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return out.detach(), x.grad.clone(), grads


def test_memory_efficient_gives_the_same_outputs_and_gradients():
    plain, efficient = _pair()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    out_p, dx_p, g_p = _outputs_and_grads(plain, x)
    out_e, dx_e, g_e = _outputs_and_grads(efficient, x)
    torch.testing.assert_close(out_e, out_p, rtol=0, atol=1e-6)
    torch.testing.assert_close(dx_e, dx_p, rtol=0, atol=1e-6)
    assert g_p.keys() == g_e.keys()
    for name in g_p:
        torch.testing.assert_close(g_e[name], g_p[name], rtol=0, atol=1e-6, msg=name)
    # The backward pass recomputes BN in train mode; running statistics must still match.
    for (name, b_p), b_e in zip(plain.named_buffers(), efficient.buffers()):
        torch.testing.assert_close(b_e, b_p, rtol=0, atol=1e-6, msg=name)


def _saved_tensor_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes autograd keeps for the backward pass after one forward: the activation memory peak.

    Counted once per storage (a ReLU and the conv after it save the same tensor). Inside a
    checkpointed region the checkpoint's own hooks take precedence, so what it does not store is
    not counted; what it does keep (its inputs, the k-channel layer outputs that also make up the
    block output) is stored anyway in both modes.
    """
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).sum().backward()
    return sum(seen.values())


def test_memory_efficient_saves_most_of_the_activation_memory():
    plain, efficient = _pair()
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(3))
    full = _saved_tensor_bytes(plain, x)
    lean = _saved_tensor_bytes(efficient, x)
    # Without checkpointing each layer stores its concatenated input three times (concat for BN,
    # BN output for ReLU/conv...), which grows quadratically with depth; with it only the
    # bottleneck and growth-rate-sized tensors remain. densenet121, 2x3x128x128: 108 MiB -> 50 MiB.
    assert lean < 0.5 * full, (lean, full)


def test_memory_efficient_is_a_no_op_without_gradients():
    plain, efficient = _pair()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(efficient.eval()(x), plain.eval()(x), rtol=0, atol=0)


@pytest.mark.parametrize("name, growth, blocks, stem", [
    ("densenet121", 32, (6, 12, 24, 16), 64), ("densenet169", 32, (6, 12, 32, 32), 64),
    ("densenet201", 32, (6, 12, 48, 32), 64), ("densenet161", 48, (6, 12, 36, 24), 96)])
def test_dense_blocks_grow_by_k_and_transitions_halve(name, growth, blocks, stem):
    with torch.device("meta"):
        model = create_model(name)
    cin, widths = stem, []
    for i, depth in enumerate(blocks):
        stage = model.stages[i]
        if i:
            assert stage.transition.conv.out_channels == cin // 2
            cin //= 2
        assert len(stage.block) == depth
        assert stage.block.layer1.conv2.out_channels == growth
        assert stage.block.layer1.conv1.out_channels == 4 * growth
        cin += depth * growth
        widths.append(cin)
    assert model.num_features == cin
    assert [f["num_chs"] for f in model.feature_info[1:]] == widths
    # Depth in the name: every conv and the classifier (121 = 2 * 58 + 3 transitions + stem + fc).
    convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert convs + 1 == int(name.removeprefix("densenet"))
