"""perf/onednn.py: which patterns fuse, that fused modules compute what the originals did, and
that the model around them keeps its shape (class, names, indexing, copies)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo import create_model
from cnnzoo.perf.training import Conv2d
from cnnzoo.perf import onednn
from cnnzoo.perf.fold import fold_batchnorm
from cnnzoo.perf.onednn import FusedConv2d, available, count_fused, fuse_for_cpu

pytestmark = pytest.mark.skipif(not available(), reason="this PyTorch build has no oneDNN")


def _fused(model: nn.Module) -> list[FusedConv2d]:
    return [m for m in model.modules() if isinstance(m, FusedConv2d)]


def _check(model: nn.Module, x: torch.Tensor, expect: int) -> nn.Module:
    model = model.eval()
    with torch.no_grad():
        ref = model(x)
        fused = copy.deepcopy(model)
        assert fuse_for_cpu(fused, x) == expect == count_fused(fused)
        torch.testing.assert_close(fused(x), ref, rtol=1e-5, atol=1e-5)
        # Another batch size than the one the weights were packed for.
        torch.testing.assert_close(fused(x[:1]), ref[:1], rtol=1e-5, atol=1e-5)
    return fused


ACTIVATIONS = [nn.ReLU(), nn.ReLU6(), nn.Hardtanh(-0.5, 0.7), nn.SiLU(), nn.Hardswish(),
               nn.Sigmoid(), nn.Tanh(), nn.LeakyReLU(0.2), nn.GELU(), nn.GELU("tanh")]


@pytest.mark.parametrize("act", ACTIVATIONS, ids=lambda a: repr(a))
def test_each_activation_fuses_into_the_conv_and_computes_the_same(act):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), act, nn.Conv2d(8, 4, 1, groups=2))
    fused = _check(model, torch.randn(2, 3, 9, 9), expect=2)
    # A container keeps its class and indexing; the activation's place holds an Identity.
    assert type(fused) is nn.Sequential and isinstance(fused[1], nn.Identity)
    assert isinstance(fused[0], FusedConv2d) and fused[0].binary is None


class _TorchvisionStyle(nn.Module):
    """One ReLU module called three times and a functional add, as torchvision writes it."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x):
        out = self.relu(self.conv1(x))
        out = self.conv2(out)
        return self.relu(out + x)


def test_a_shared_activation_and_a_residual_add_rewrite_the_block_forward():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 1), _TorchvisionStyle())
    fused = _check(model, torch.randn(2, 3, 6, 6), expect=3)
    block = fused[1]
    assert isinstance(block, torch.fx.GraphModule)
    # The shared ReLU stays (other calls of it may remain); the children keep their kinds.
    assert isinstance(block.relu, nn.ReLU) and isinstance(block.conv1, FusedConv2d)
    # The block's input is the conv's fresh output, which nothing reads after the block: the
    # add may accumulate into it.
    assert block.conv2.binary == "sum_" and block.conv2.unary[0] == "relu"


@pytest.mark.parametrize("before", [None, nn.Identity(), nn.Dropout(0.5)],
                         ids=["first", "after-identity", "after-dropout"])
def test_the_callers_input_is_never_overwritten(before):
    torch.manual_seed(0)
    # The block's input is the Sequential's own input (directly, or handed on by a weightless
    # module), which the caller still holds.
    model = nn.Sequential(*([before] if before is not None else []), _TorchvisionStyle())
    x = torch.randn(2, 8, 6, 6)
    fused = _check(model, x, expect=2)
    assert fused[-1].conv2.binary == "add"
    kept = x.clone()
    with torch.no_grad():
        fused(x)
    assert torch.equal(x, kept)


class _ReadsWhatItAddsTo(nn.Module):
    """``relu(conv(x) + x)``: the conv's own input is the other operand of the add."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.conv(x) + x)


class _ReadsAFreshOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(8, 8, 1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        a = self.c1(x)
        return torch.relu(self.c2(a) + a)


def test_a_conv_never_accumulates_into_its_own_input():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 7, 7)
    fused = _check(nn.Sequential(nn.Conv2d(8, 8, 1), _ReadsWhatItAddsTo(), _ReadsWhatItAddsTo()),
                   x, expect=3)
    assert [fused[i].conv.binary for i in (1, 2)] == ["add", "add"]
    fused = _check(nn.Sequential(_ReadsAFreshOutput()), x, expect=2)
    assert fused[0].c2.binary == "add"


class _Branches(nn.Sequential):
    """Every child reads the same input: no child may overwrite it."""

    def forward(self, x):
        return torch.cat([m(x) for m in self], 1)


def test_a_sequential_with_its_own_forward_owns_nothing():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 8, 1), _Branches(_TorchvisionStyle(), _TorchvisionStyle()))
    fused = _check(model, torch.randn(2, 8, 6, 6), expect=5)
    assert [b.conv2.binary for b in fused[1]] == ["add", "add"]


def test_ownership_of_the_input_passes_down_nested_sequentials():
    torch.manual_seed(0)
    inner = lambda: nn.Sequential(_TorchvisionStyle(), _TorchvisionStyle())  # noqa: E731
    model = nn.Sequential(inner(), inner())
    x = torch.randn(2, 8, 6, 6)
    kept = x.clone()
    fused = _check(model, x, expect=8)
    # Only the very first block reads the caller's tensor; every later one a fresh output.
    assert [b.conv2.binary for s in fused for b in s] == ["add", "sum_", "sum_", "sum_"]
    with torch.no_grad():
        fused(x)
    assert torch.equal(x, kept)


class _AddInto(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Conv2d(4, 4, 1)
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        shortcut = self.proj(x)
        out = self.conv(x) + shortcut
        # ``shortcut`` is read again after the add: overwriting it there would be wrong.
        return out + shortcut * 2


class _IaddOther(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Conv2d(4, 4, 1)
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        y = self.proj(x)
        y += self.conv(x)  # y changes in place: the conv may not take y's place
        return y


def test_residual_adds_overwrite_only_what_nobody_reads_again():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 5, 5)
    fused = _check(nn.Sequential(_AddInto()), x, expect=2)
    assert fused[0].conv.binary == "add"
    fused = _check(nn.Sequential(_IaddOther()), x, expect=2)
    assert fused[0].conv.binary is None  # packed, but the add stays outside
    # In the model's own forward (which keeps its class) the add is not fused either.
    fused = _check(_AddInto(), x, expect=2)
    assert type(fused) is _AddInto and fused.conv.binary is None


def test_resnet_fused_keeps_its_structure_and_fuses_every_residual():
    torch.manual_seed(0)
    model = create_model("resnet50", num_classes=10).eval()
    fold_batchnorm(model)
    fused = _check(model, torch.randn(2, 3, 64, 64), expect=53)
    blocks = fused.stages[1].blocks
    assert type(fused.stages[1]).__name__ == type(model.stages[1]).__name__
    # In every bottleneck one conv also adds the other branch and applies the ReLU (in the
    # first, the projection shortcut's conv, which comes first in the graph). The other branch
    # is overwritten in place: a conv output computed in the block, or the block's input,
    # which in a stage is the previous block's output, read by nothing else.
    adds = [[f for f in _fused(b) if f.binary] for b in blocks]
    assert [len(a) for a in adds] == [1, 1, 1, 1]
    assert [a[0].binary for a in adds] == ["sum_", "sum_", "sum_", "sum_"]
    assert all(a[0].unary[0] == "relu" for a in adds)
    assert isinstance(blocks[0].conv1.act, nn.Identity)


def test_fused_models_copy_move_and_save_their_weights():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()).eval()
    x = torch.randn(1, 3, 8, 8)
    fuse_for_cpu(model, x)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        ref = model(x)
        model[0].conv.weight.mul_(2)
        model[0]._pack()
        torch.testing.assert_close(twin(x), ref)  # the copy has its own packed weight
        twin = twin.to(memory_format=torch.channels_last)  # packs again
        torch.testing.assert_close(twin(x), ref)
    assert set(twin.state_dict()) == {"0.conv.weight", "0.conv.bias"}
    with pytest.raises(RuntimeError, match="float32"):
        twin.double()


def test_bf16_convs_fuse_and_pack_in_bf16_where_onednn_has_bf16_kernels(monkeypatch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.SiLU(),
                          nn.Conv2d(8, 8, 1)).eval().to(torch.bfloat16)
    x = torch.randn(2, 3, 8, 8, dtype=torch.bfloat16)
    with torch.no_grad():
        ref = model(x)
        fused = copy.deepcopy(model)
        expect = 2 if available(torch.bfloat16) else 0
        assert fuse_for_cpu(fused, x) == expect
        if expect:
            assert {m.packed.dtype for m in _fused(fused)} == {torch.bfloat16}
            # The activation runs inside the conv before the bf16 rounding: a rounding apart.
            torch.testing.assert_close(fused(x).float(), ref.float(), rtol=0.02, atol=0.02)
            back = copy.deepcopy(fused).float()  # packs again, in float32
            assert {m.packed.dtype for m in _fused(back)} == {torch.float32}
            torch.testing.assert_close(back(x.float()), model.float()(x.float()),
                                       rtol=1e-5, atol=1e-5)
    # Where oneDNN has no bf16 kernels nothing in bf16 is packable, and a fused model cast to
    # bf16 says so rather than computing in another precision.
    monkeypatch.setattr(onednn, "_bf16_kernels", lambda: False)
    assert not available(torch.bfloat16) and available(torch.float32)
    plain = copy.deepcopy(model).float()
    fuse_for_cpu(plain, x.float())
    with pytest.raises(RuntimeError, match="bfloat16"):
        plain.to(torch.bfloat16)
    assert not available(torch.float16)


def test_rewritten_blocks_keep_their_se_as_one_call_gating_in_place():
    from cnnzoo.layers.squeeze_excite import SqueezeExcite
    from cnnzoo.perf.inplace import use_inplace
    torch.manual_seed(0)
    model = create_model("efficientnet_b0", num_classes=10).eval()
    fold_batchnorm(model)
    assert use_inplace(model) == 16  # as optimize runs them: the SE gates in place first
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        fuse_for_cpu(model, x)
        ses = [m for m in model.modules() if isinstance(m, SqueezeExcite)]
        # The residual blocks' forwards were rewritten (conv + shortcut in one call); inlined
        # there, their SE would gate out of place.
        assert any(isinstance(b, torch.fx.GraphModule) for b in model.modules())
        called = []
        for se in ses:
            se.register_forward_hook(lambda m, args, out: called.append(
                out.data_ptr() == args[0].data_ptr()))
        torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-5)
    assert len(called) == len(ses) == 16 and all(called)


def test_untraceable_modules_are_searched_child_by_child():
    class Picky(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())

        def forward(self, x):
            if x.sum() > 1e9:  # data-dependent: fx cannot trace this
                return x
            return F.relu(self.body(x))

    fused = _check(Picky(), torch.randn(2, 3, 8, 8), expect=1)
    assert isinstance(fused.body[0], FusedConv2d)


def test_only_modules_with_a_conv_left_to_fuse_are_traced(monkeypatch):
    # Tracing is what fusing costs: a DenseNet's BNs, ReLUs and convs traced one by one took
    # most of optimize()'s time. The fused result is the same either way (the suite's
    # family test); what must not come back is the tracing of conv-free subtrees.
    from cnnzoo.perf import onednn

    traced = []
    real = onednn._Tracer.trace

    def spy(self, root, *args, **kwargs):
        traced.append(root)
        return real(self, root, *args, **kwargs)

    monkeypatch.setattr(onednn._Tracer, "trace", spy)
    model = create_model("densenet121", num_classes=10).eval()
    # Every conv ends up one oneDNN call: fused with what follows, or alone on packed weights.
    fused = _check(model, torch.randn(1, 3, 32, 32),
                   expect=sum(type(m) in (nn.Conv2d, Conv2d) for m in model.modules()))
    assert traced and isinstance(fused, type(model))
    for root in traced:
        assert not isinstance(root, (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Identity))
        assert any(type(m) in (nn.Conv2d, Conv2d) for m in root.modules()), type(root).__name__

