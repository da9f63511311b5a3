"""Attention as a plug-in: the blocks (SE, CBAM, non-local), the table, and the networks built on them."""
from __future__ import annotations

import copy
import functools
import re

import pytest
import torch
from torch import fx, nn

from cnnzoo import create_model
from cnnzoo.inspect.counts import count_params, registered_param_count
from cnnzoo.layers.attention import create_attn, get_attn
from cnnzoo.layers.cbam import CBAM
from cnnzoo.layers.non_local import NonLocal
from cnnzoo.layers.squeeze_excite import SqueezeExcite
from cnnzoo.perf.inplace import InplaceSqueezeExcite, use_inplace
from cnnzoo.perf.tracer import PerfTracer

from conftest import read_reference

REFERENCE = {row[0]: int(row[2]) for row in read_reference("param_counts.tsv")}


def _randomise_bn(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics and affines, so eval-mode comparisons test every layer."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


def test_attention_table_resolves_every_name_and_passes_factories_through():
    assert get_attn("se") is SqueezeExcite
    assert get_attn("CBAM") is CBAM
    assert get_attn("nl") is NonLocal
    assert get_attn(None) is None and get_attn("none") is None
    custom = functools.partial(SqueezeExcite, rd_ratio=1 / 4)
    assert get_attn(custom) is custom
    assert create_attn(custom, 64).fc1.out_channels == 16
    with pytest.raises(ValueError, match="unknown attention 'cbma'"):
        get_attn("cbma")


@pytest.mark.parametrize("scale", [1.0, 5.0])
def test_se_gates_lie_strictly_between_zero_and_one(scale):
    torch.manual_seed(0)
    se = SqueezeExcite(64)
    x = torch.randn(4, 64, 7, 7) * scale
    gates = se.gate_values(x)
    assert gates.shape == (4, 64, 1, 1)
    assert (gates > 0).all() and (gates < 1).all()
    torch.testing.assert_close(se(x), x * gates)


def test_the_inplace_pass_gates_a_fresh_tensor_in_place_in_inference_only():
    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv2d(16, 16, 1), SqueezeExcite(16))  # SE reads the conv's output
    plain = copy.deepcopy(block[1])
    assert type(block[1]) is SqueezeExcite  # plain until asked
    assert use_inplace(block) == 1
    se = block[1]
    assert type(se) is InplaceSqueezeExcite and isinstance(se, SqueezeExcite)
    assert se.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(2, 16, 5, 5).contiguous(memory_format=torch.channels_last)
    expected = x * plain.gate_values(x)
    # Inference: the input itself is scaled and handed on, bit for bit the plain product.
    for context in (torch.no_grad, torch.inference_mode):
        y = x.clone()
        with context():
            out = se(y)
        assert out.data_ptr() == y.data_ptr()
        assert torch.equal(out, expected.detach())
    # Autograd records: a new tensor, the input untouched, the gradients the plain block's.
    y = x.clone().requires_grad_()
    out = se(y)
    assert out.data_ptr() != y.data_ptr() and torch.equal(y, x)
    out.sum().backward()
    y2 = x.clone().requires_grad_()
    plain(y2).sum().backward()
    assert torch.equal(y.grad, y2.grad)
    assert torch.equal(se.fc1.weight.grad, plain.fc1.weight.grad)
    # An SE reading its block's input is not picked: never in place.
    own = nn.Sequential(SqueezeExcite(16))
    assert use_inplace(own) == 0 and type(own[0]) is SqueezeExcite
    y = x.clone()
    with torch.no_grad():
        assert own(y).data_ptr() != y.data_ptr() and torch.equal(y, x)
    # Tracers keep the twin one call, and fx's own records the plain product.
    graph = PerfTracer().trace(block)
    assert [n.target for n in graph.nodes if n.op == "call_module"] == ["0", "1"]
    traced = str(fx.symbolic_trace(se).graph)
    assert "mul_" not in traced and "mul" in traced


@pytest.mark.parametrize("name", ["efficientnet_b0", "mobilenet_v3_large", "seresnet50",
                                  "resnet18", "drn_c_26", "inception_resnet_v2"])
def test_every_se_of_these_networks_reads_a_fresh_tensor_and_keeps_their_outputs(name):
    torch.manual_seed(0)
    kwargs = {"attn": "se"} if name in ("resnet18", "drn_c_26", "inception_resnet_v2") else {}
    model = create_model(name, num_classes=10, **kwargs).eval()
    _randomise_bn(model)
    ses = [m for m in model.modules() if isinstance(m, SqueezeExcite)]
    assert ses and all(type(se) is SqueezeExcite for se in ses)  # the model's default is plain
    plain = copy.deepcopy(model)
    use_inplace(model)
    assert all(type(se) is InplaceSqueezeExcite for se in ses)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(model(x), plain(x))


def test_cbam_gates_lie_in_zero_one_and_follow_the_papers_equations():
    torch.manual_seed(0)
    cbam = CBAM(32).eval()
    _randomise_bn(cbam)
    x = torch.randn(2, 32, 9, 9) * 3
    ch = cbam.channel.gate_values(x)
    assert ch.shape == (2, 32, 1, 1) and (ch > 0).all() and (ch < 1).all()
    refined = x * ch
    sp = cbam.spatial.gate_values(refined)
    assert sp.shape == (2, 1, 9, 9) and (sp > 0).all() and (sp < 1).all()

    # Eq. 2: one MLP shared by the average- and the max-pooled descriptor.
    c = cbam.channel
    mlp = lambda s: c.fc2(torch.relu(c.fc1(s)))  # noqa: E731
    mc = torch.sigmoid(mlp(x.mean((2, 3), keepdim=True)) + mlp(x.amax((2, 3), keepdim=True)))
    # Eq. 3: a 7x7 conv over [avg; max] along the channel axis (then the BN of both reference codes).
    f1 = x * mc
    conv = cbam.spatial.conv
    ms = torch.sigmoid(conv.bn(conv.conv(torch.cat([f1.mean(1, keepdim=True),
                                                    f1.amax(1, keepdim=True)], 1))))
    with torch.no_grad():
        torch.testing.assert_close(cbam(x), f1 * ms)
    assert conv.conv.kernel_size == (7, 7)


def test_fresh_non_local_block_is_identity_and_its_weights_are_a_softmax():
    torch.manual_seed(0)
    block = NonLocal(16).eval()
    x = torch.randn(2, 16, 6, 5)
    with torch.no_grad():
        assert torch.equal(block(x), x)
        weights = block.attention(x)
        # Embedded Gaussian (Eq. 3): each position's weights over the (2x2-pooled) positions sum to 1.
        assert weights.shape == (2, 30, 3 * 3)
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, 30))
        nn.init.ones_(block.out.bn.weight)
        assert not torch.allclose(block(x), x), "with a non-zero output BN the block must act"
    assert block.theta.out_channels == 8  # half the input channels (Section 3.3)


def test_resnet_accepts_cbam_and_nl_inside_every_block():
    model = create_model("resnet50", attn="cbam")
    assert all(isinstance(b.attn, CBAM) for s in model.stages for b in s.blocks)
    nl = create_model("resnet18", attn="nl", num_classes=4).eval()
    assert isinstance(nl.stages[3].blocks[1].attn, NonLocal)
    with torch.no_grad():
        assert nl(torch.randn(1, 3, 64, 64)).shape == (1, 4)


def test_se_networks_reproduce_the_reference_counts_exactly():
    for name in ("seresnet50", "seresnext50_32x4d", "senet154"):
        assert registered_param_count(name) == REFERENCE[name], name


def _se_params(chs: int, rd: int | None = None) -> int:
    # SE paper Fig. 3: FC(C -> C/16) and FC(C/16 -> C), with biases as every reference code has.
    rd = rd or chs // 16
    return chs * rd + rd + rd * chs + chs


def test_seresnet101_is_resnet101_plus_one_se_block_per_bottleneck():
    # SE paper Section 4 / Table 1: an SE block on the output of every bottleneck's branch.
    depths, widths = (3, 4, 23, 3), (256, 512, 1024, 2048)
    extra = sum(d * _se_params(c) for d, c in zip(depths, widths))
    assert registered_param_count("seresnet101") == registered_param_count("resnet101") + extra


def test_cbam_resnet50_is_within_a_tenth_of_a_percent_of_the_papers_count():
    # CBAM paper, Table 4: 'ResNet50 + CBAM' has 28.09M parameters.
    count = registered_param_count("cbam_resnet50")
    assert abs(count - 28.09e6) / 28.09e6 < 1e-3
    # ... which is SE-ResNet-50 plus, per block, a 7x7 conv on 2 maps and its 1-channel BN.
    assert count == REFERENCE["seresnet50"] + 16 * (2 * 7 * 7 + 2)


def test_senet154_has_the_four_changes_of_the_papers_appendix():
    with torch.device("meta"):
        model = create_model("senet154")
    stem_convs = [m for m in model.stem.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.kernel_size, c.out_channels) for c in stem_convs] == [((3, 3), 64), ((3, 3), 64),
                                                                    ((3, 3), 128)]
    first = model.stages[0].blocks[0]
    assert first.conv1.conv.out_channels * 2 == first.conv2.conv.out_channels == 256
    assert first.conv2.conv.groups == 64
    assert first.downsample.conv.kernel_size == (1, 1)  # stage 1 does not downsample
    for stage in model.stages[1:]:
        assert stage.blocks[0].downsample.conv.kernel_size == (3, 3)
        assert stage.blocks[0].downsample.conv.stride == (2, 2)
    assert model.head.drop.p == 0.2


def _timm_to_cnnzoo(key: str) -> str:
    """The renames from timm's ResNet and legacy SENet names to ours: a table, no reshaping."""
    key = re.sub(r"^layer0\.(conv|bn)(\d)\.", r"stem.conv\2.\1.", key)
    key = re.sub(r"^conv1\.", "stem.conv.", key)
    key = re.sub(r"^bn1\.", "stem.bn.", key)
    key = re.sub(r"^layer(\d)\.(\d+)\.", lambda m: f"stages.{int(m[1]) - 1}.blocks.{m[2]}.", key)
    key = re.sub(r"\.conv(\d)\.", r".conv\1.conv.", key)
    key = re.sub(r"\.bn(\d)\.", r".conv\1.bn.", key)
    key = re.sub(r"stem\.conv(\d)\.conv\.conv\.", r"stem.conv\1.conv.", key)
    key = re.sub(r"stem\.conv(\d)\.conv\.bn\.", r"stem.conv\1.bn.", key)
    for old, new in ((".se.", ".attn."), (".se_module.", ".attn."),
                     (".downsample.0.", ".downsample.conv."), (".downsample.1.", ".downsample.bn.")):
        key = key.replace(old, new)
    return re.sub(r"^(fc|last_linear)\.", "head.fc.", key)


@pytest.mark.parametrize("timm_name,name", [("seresnet50", "seresnet50"),
                                            ("legacy_senet154", "senet154")])
def test_timm_weights_map_onto_se_networks_by_renaming_keys(timm_name, name):
    import timm  # a test dependency (pyproject [test])

    torch.manual_seed(0)
    ref = timm.create_model(timm_name).eval()
    _randomise_bn(ref)
    ours = create_model(name).eval()
    ours.load_state_dict({_timm_to_cnnzoo(k): v for k, v in ref.state_dict().items()})
    x = torch.randn(1, 3, 65, 65)  # odd size: SENet-154's ceil-mode stem pool must agree too
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)


def test_fresh_nl_resnet50_equals_resnet50_with_the_same_weights():
    torch.manual_seed(0)
    base = create_model("resnet50").eval()
    _randomise_bn(base)
    nl = create_model("nl_resnet50").eval()
    result = nl.load_state_dict(base.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert result.missing_keys and all(".nl." in k for k in result.missing_keys)
    # Non-local paper, Table 2b '5-block': after every other block, 2 in res3 and 3 in res4.
    placed = [(i, j) for i, s in enumerate(nl.stages) for j, b in enumerate(s.blocks)
              if isinstance(b.nl, NonLocal)]
    assert placed == [(1, 1), (1, 3), (2, 1), (2, 3), (2, 5)]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(nl(x), base(x), rtol=1e-5, atol=1e-5)


def test_nl_resnet50_count_is_resnet50_plus_five_blocks_of_figure_2():
    # Fig. 2: theta, phi, g (C -> C/2) and W (C/2 -> C) as 1x1 convs with biases, plus W's BN.
    def block(c):
        return 3 * (c * c // 2 + c // 2) + (c // 2 * c + c) + 2 * c
    extra = 2 * block(512) + 3 * block(1024)
    assert registered_param_count("nl_resnet50") == registered_param_count("resnet50") + extra


def test_vgg_takes_attention_once_per_stage_and_stays_plain_without_it():
    with torch.device("meta"):
        plain = create_model("vgg11")
        se = create_model("vgg11", attn="se")
    assert not any(isinstance(m, SqueezeExcite) for m in plain.modules())
    assert [type(s.attn) for s in se.stages] == [SqueezeExcite] * 5
    # Reduction 16, but never below 8 channels (timm's rounding): 64 channels squeeze to 8, not 4.
    extra = _se_params(64, rd=8) + sum(_se_params(c) for c in (128, 256, 512, 512))
    assert count_params(se) == count_params(plain) + extra
    model = create_model("vgg11", attn="cbam", num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)
