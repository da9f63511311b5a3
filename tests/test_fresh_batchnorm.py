"""perf.inplace: BatchNorm and SE in place only where the graph shows their input is fresh, only in
inference, and to the plain model's very bits."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import fx, nn

import cnnzoo
from cnnzoo.layers.conv_norm_act import ConvNormAct
from cnnzoo.layers.squeeze_excite import SqueezeExcite
from cnnzoo.perf.fold import fold_batchnorm
from cnnzoo.perf.inplace import (InplaceBatchNorm2d, InplaceSqueezeExcite, count_inplace,
                                 inference_affine, use_inplace)
from cnnzoo.perf.tracer import PerfTracer

BIG = (2, 8, 1024, 520)  # 34 MB of float32: above glibc's default 32 MiB mmap ceiling
SMALL = (2, 8, 16, 16)


def _randomise_bn(bn: nn.BatchNorm2d) -> None:
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.normal_()
    bn.bias.data.normal_()


def _pair() -> tuple[nn.BatchNorm2d, nn.BatchNorm2d]:
    """(the pass's BatchNorm after a conv, a plain copy of it), both in eval mode."""
    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))
    _randomise_bn(block[1])
    ref = copy.deepcopy(block[1])
    assert use_inplace(block) == 1
    return block[1].eval(), ref.eval()


def _swapped(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules()
            if isinstance(m, (InplaceBatchNorm2d, InplaceSqueezeExcite))]


class _TwoUsers(nn.Module):
    def __init__(self, norm: nn.Module):
        super().__init__()
        self.conv, self.norm = nn.Conv2d(8, 8, 3, padding=1), norm

    def forward(self, x):
        y = self.conv(x)
        return self.norm(y) + y  # the conv's output is read again after the norm


class _CalledTwice(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2, self.bn = nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8)

    def forward(self, x):
        return self.bn(self.conv1(x)) + self.bn(self.conv2(x))


class _Branchy(nn.Module):
    """fx cannot trace this as a whole (a data-dependent branch): the pass looks one level down."""

    def __init__(self):
        super().__init__()
        self.block = ConvNormAct(8, 8, 3)

    def forward(self, x):
        return self.block(x) if x.sum() > 0 else -self.block(x)


def test_the_pass_picks_a_batchnorm_after_a_conv_and_keeps_its_state():
    block = ConvNormAct(3, 8, 3).eval()
    bn = block.bn
    params, keys = list(block.parameters()), block.state_dict().keys()
    assert count_inplace(block) == 0  # the model is plain until asked
    assert use_inplace(block) == 1
    assert block.bn is bn and type(bn) is InplaceBatchNorm2d and isinstance(bn, nn.BatchNorm2d)
    assert type(block.conv) is nn.Conv2d
    assert list(block.parameters()) == params and block.state_dict().keys() == keys
    assert count_inplace(block) == 1


@pytest.mark.parametrize("build, picked", [
    (lambda: nn.Sequential(nn.Conv2d(8, 8, 3), nn.Identity(), nn.BatchNorm2d(8)), ["2"]),
    (lambda: nn.Sequential(nn.Conv2d(8, 8, 3), nn.ReLU(inplace=True), nn.BatchNorm2d(8)), ["2"]),
    (lambda: nn.Sequential(nn.ReLU(), nn.BatchNorm2d(8)), ["1"]),  # a new tensor, out of place
    (lambda: nn.Sequential(ConvNormAct(8, 8, 3, act_layer=None), SqueezeExcite(8)),
     ["0.bn", "1"]),
    (lambda: nn.Sequential(ConvNormAct(8, 8, 3), SqueezeExcite(8)), ["0.bn", "1"]),
    # The block's input: the caller may still hold it.
    (lambda: nn.Sequential(nn.BatchNorm2d(8)), []),
    (lambda: nn.Sequential(SqueezeExcite(8)), []),
    (lambda: nn.Sequential(nn.Identity(), nn.BatchNorm2d(8)), []),
    (lambda: nn.Sequential(nn.Identity(), SqueezeExcite(8)), []),
    (lambda: nn.Sequential(nn.ReLU(inplace=True), nn.BatchNorm2d(8)), []),
    (lambda: nn.Sequential(nn.Dropout(0.1), nn.BatchNorm2d(8)), []),
    # Two users of the conv's output, or one module called in two places.
    (lambda: _TwoUsers(nn.BatchNorm2d(8)), []),
    (lambda: _TwoUsers(SqueezeExcite(8)), []),
    (_CalledTwice, []),
    (_Branchy, ["block.bn"]),
], ids=["identity-over-conv", "inplace-act-over-conv", "out-of-place-act", "se-after-block",
        "se-after-act", "bn-block-input", "se-block-input", "identity-over-input-bn",
        "identity-over-input-se", "inplace-act-over-input", "dropout", "two-users-bn",
        "two-users-se", "called-twice", "untraceable-parent"])
def test_the_graph_decides_which_inputs_are_fresh(build, picked):
    torch.manual_seed(0)
    model = build().eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            _randomise_bn(m)
    plain = copy.deepcopy(model)
    assert use_inplace(model) == len(picked)
    assert _swapped(model) == picked
    # Whatever was picked, the outputs are the plain model's bit for bit, and the input ends
    # as the plain model leaves it (an in-place ReLU's input is the one it changes).
    x = torch.randn(2, 8, 10, 10)
    x_plain = x.clone()
    with torch.inference_mode():
        want = plain(x_plain)
        assert torch.equal(model(x), want)
    assert torch.equal(x, x_plain)


@pytest.mark.parametrize("shape", [BIG, SMALL])
@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_a_fresh_input_is_normalised_in_place_to_torchs_very_bits(shape, context):
    ours, ref = _pair()
    x = torch.randn(shape)
    with context():
        expected = ref(x)
        out = ours(x)
    assert out.data_ptr() == x.data_ptr()
    assert torch.equal(out, expected)  # torch's kernel, written into x


def test_channels_last_input_in_place_too():
    ours, ref = _pair()
    x = torch.randn(2, 8, 256, 260).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        expected = ref(x)
        scale, shift = inference_affine(ref)
        affine = x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)
        out = ours(x)
    assert out.data_ptr() == x.data_ptr()
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(affine, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [BIG, SMALL])
def test_with_grad_or_other_dtypes_the_input_is_left_alone(shape):
    ours, ref = _pair()
    x = torch.randn(shape)
    kept = x.clone()
    out = ours(x)  # grad mode on: autograd may need the input
    assert out.data_ptr() != x.data_ptr() and torch.equal(x, kept)
    torch.testing.assert_close(out, ref(kept), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        xd = kept[:, :, :8, :8].double()
        out = ours.double()(xd)
        assert out.data_ptr() != xd.data_ptr() and torch.equal(xd, kept[:, :, :8, :8].double())


def test_gradients_flow_through_the_twin_as_through_torchs():
    ours, ref = _pair()
    x = torch.randn(SMALL, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    ours(x).pow(2).sum().backward()
    ref(x2).pow(2).sum().backward()
    assert torch.equal(x.grad, x2.grad)
    assert torch.equal(ours.weight.grad, ref.weight.grad)


def test_training_mode_uses_batch_statistics_out_of_place():
    ours, ref = _pair()
    ours.train(), ref.train()
    x = torch.randn(SMALL)
    kept = x.clone()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(kept), rtol=1e-5, atol=1e-5)
    assert torch.equal(x, kept)
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)


def test_a_hook_keeping_a_convs_output_sees_it_changed_only_in_inference():
    # The documented cost of the pass, which is why the models do not carry it.
    torch.manual_seed(0)
    block = ConvNormAct(3, 8, 3)
    _randomise_bn(block.bn)
    use_inplace(block)
    kept = []
    block.conv.register_forward_hook(lambda m, a, out: kept.append(out))
    x = torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        computed = block.conv(x).clone()
    kept.clear()
    for mode, grad, changed in (("eval", False, True), ("eval", True, False),
                                ("train", False, False)):
        getattr(block, mode)()
        with torch.set_grad_enabled(grad):
            block(x)
        assert torch.equal(kept.pop(), computed) is not changed, (mode, grad)


def test_models_after_the_pass_give_the_plain_models_bits():
    torch.manual_seed(0)
    model = cnnzoo.create_model("resnet18", num_classes=10, attn="se").eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            _randomise_bn(m)
    plain = copy.deepcopy(model)
    bns = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    ses = sum(isinstance(m, SqueezeExcite) for m in model.modules())
    # Every BatchNorm there reads a conv's output, every SE a conv block's.
    assert use_inplace(model) == bns + ses == count_inplace(model)
    assert ses == 8
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        want = plain(x)
        assert torch.equal(model(x), want)
        assert torch.equal(model(x), want)  # and again: nothing it keeps was overwritten
    assert torch.equal(model(x), plain(x))  # with autograd on: the plain layers' path


def test_the_twin_stays_one_traced_call_and_still_folds():
    block = ConvNormAct(3, 8, 3).eval()
    _randomise_bn(block.bn)
    assert use_inplace(block) == 1
    gm = fx.GraphModule(block, PerfTracer().trace(block))
    assert [n.target for n in gm.graph.nodes if n.op == "call_module"] == ["conv", "bn", "act"]
    x = torch.randn(2, 3, 10, 10)
    with torch.no_grad():
        ref = block(x)
    assert fold_batchnorm(block) == [("conv", "bn")]
    assert type(block.bn) is nn.Identity
    with torch.no_grad():
        torch.testing.assert_close(block(x), ref, rtol=1e-5, atol=1e-5)
