"""cnnzoo.perf: BN folding, optimize(), the ONNX Runtime runner and the harness (nothing timed).

Where the code measures, the tests hand it a fake clock, so the choice it makes and the numbers
it reports are checked exactly, never against wall time.
"""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from cnnzoo import create_model, list_models, model_card
from cnnzoo.inspect.counts import registered_param_count
from cnnzoo.perf import (BenchSettings, InferenceModel, count_gmacs, find_conv_bn_pairs,
                         fold_batchnorm, optimize)
from cnnzoo.perf.bench import bench_model, benchmark_inference, benchmark_train, grad_scaler
from cnnzoo.perf.onednn import available as onednn_available
from cnnzoo.perf.onnxrt import OrtRunner, export_onnx_bytes
from cnnzoo.perf.timing import synchronizer

from conftest import randomise_bn, read_reference, small_input, smallest_per_family


FAMILIES = smallest_per_family()


def test_every_family_has_a_model_for_the_optimize_check():
    assert len(FAMILIES) >= 4  # LeNet-5, AlexNet, VGG, ResNet at least
    assert set(FAMILIES) == {model_card(n).family for n in list_models()}


def _family_case(name: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A family's model with BN statistics that matter, a batch of 3, and its eager logits."""
    torch.manual_seed(0)
    model = randomise_bn(create_model(name))
    x = small_input(name, batch=3)
    with torch.no_grad():
        return model, x, model(x)


# One test per family, so that pytest-xdist spreads them: the oneDNN paths trace and freeze
# the model, seconds each.
@pytest.mark.parametrize("name", FAMILIES.values(), ids=FAMILIES.keys())
def test_optimize_keeps_outputs_for_one_model_of_every_family(name):
    model, x, ref = _family_case(name)
    # Every path with nothing measured: plain, then fused for oneDNN, every 3x3 stride-1 conv
    # on NNPACK, and run two samples at a time (3 = a slice of 2 and a remainder of 1).
    for layout, fused in ((False, False), (True, False), (False, True), (True, True)):
        fast = optimize(model, example=x, fold_bn=True, channels_last=layout, onednn=fused,
                        nnpack=fused, micro_batch=2 if fused else None)
        torch.testing.assert_close(
            fast(x), ref, rtol=1e-4, atol=1e-4,
            msg=lambda m: f"{name}, channels_last={layout}, oneDNN={fused}: {m}")
        assert fast.report.channels_last is layout
        assert (fast.report.onednn + fast.report.nnpack > 0) is (fused and onednn_available())
        assert fast.report.nnpack == 0 or fused
        assert fast.report.micro_batch == (2 if fused else None)


def test_resnet_fold_removes_every_bn_including_the_stem():
    model = randomise_bn(create_model("resnet18"))
    pairs = find_conv_bn_pairs(model)
    assert ("stem.conv", "stem.bn") in pairs
    assert ("stages.1.blocks.0.downsample.conv", "stages.1.blocks.0.downsample.bn") in pairs
    fast = optimize(model, fold_bn=True, channels_last=False, onednn=False, micro_batch=None)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    # ConvNormAct becomes one conv (with the BN's shift as its bias) and its activation; the
    # BN's name stays, as an Identity, for code that reaches it by name.
    block = fast.model.stages[0].blocks[0].conv1
    assert isinstance(block.bn, nn.Identity) and isinstance(fast.model.stem.bn, nn.Identity)
    assert block.conv.bias is not None
    assert fast.report.folded == len(pairs) == 20


def test_fold_works_on_attribute_style_blocks_of_other_libraries():
    model = randomise_bn(torchvision.models.resnet18(num_classes=10))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    assert len(fold_batchnorm(model)) == 20
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref, rtol=1e-4, atol=1e-4)


class _ConvReadTwice(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y  # the conv's raw output is needed: the BN cannot go into it


class _SharedConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)

    def forward(self, x):
        return self.conv(self.bn(self.conv(x)))


class _BNWithAct(nn.BatchNorm2d):
    def forward(self, x):  # a BN subclass that does more than normalise (timm's BatchNormAct2d)
        return torch.relu(super().forward(x))


class _Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())

    def forward(self, x):
        if x.sum() > 1e9:  # data-dependent: fx cannot trace this module as a whole
            return x
        return self.body(x)


def test_fold_leaves_pairs_alone_where_folding_would_change_the_result():
    x = torch.randn(2, 3, 8, 8)
    for model in (_ConvReadTwice(), _SharedConv(),
                  nn.Sequential(nn.Conv2d(3, 4, 3), _BNWithAct(4))):
        model = randomise_bn(model)
        xin = x if not isinstance(model, _SharedConv) else torch.randn(2, 4, 8, 8)
        with torch.no_grad():
            ref = model(xin)
        assert fold_batchnorm(model) == []
        with torch.no_grad():
            torch.testing.assert_close(model(xin), ref)


def test_fold_looks_inside_a_module_fx_cannot_trace():
    model = randomise_bn(_Untraceable())
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        ref = model(x)
    assert fold_batchnorm(model) == [("body.0", "body.1")]
    assert isinstance(model.body[1], nn.Identity)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-5)


def test_fold_refuses_a_training_mode_model():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    try:
        fold_batchnorm(model)
    except ValueError as exc:
        assert "eval" in str(exc)
    else:
        raise AssertionError("a training-mode BN must not be folded")


def test_optimize_leaves_the_original_model_untouched():
    model = randomise_bn(create_model("resnet18", num_classes=5))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = optimize(model, fold_bn=True, channels_last=False, onednn=True, micro_batch=2)
    assert fast.report.folded > 0
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert fast.default_cfg == model.default_cfg and fast.model_name == "resnet18"


def _layout_clock(model: nn.Module, nchw_cost: float, cl_cost: float):
    """A fake clock whose steps cost what we say, depending on the layout the model is in."""
    now = [0.0]
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))

    def clock() -> float:
        cl = conv.weight.is_contiguous(memory_format=torch.channels_last)
        now[0] += cl_cost if cl else nchw_cost
        return now[0]
    return clock


def test_optimize_auto_layout_keeps_the_candidate_measured_faster():
    for nchw_cost, cl_cost, expect_cl in ((2.0, 1.0, True), (1.0, 2.0, False)):
        model = randomise_bn(create_model("resnet18", num_classes=5))
        x = torch.randn(1, 3, 32, 32)
        fast = optimize(model, example=x, fold_bn=True, channels_last="auto", inplace=True,
                        onednn=False, micro_batch=None,
                        clock=_layout_clock(model, nchw_cost, cl_cost))
        assert fast.report.channels_last is expect_cl
        assert fast.report.timings_ms == {"folded_channels_last": 1000 * cl_cost,
                                          "folded_nchw": 1000 * nchw_cost}
        with torch.no_grad():
            assert fast(x).shape == (1, 5)


def test_optimize_times_its_candidates_in_turns():
    # Which candidate runs each forward, read off the stem conv: folded (a bias) or not, and
    # its layout. Timed in turns, no candidate's steps all come before another's.
    model = randomise_bn(create_model("resnet18", num_classes=5))
    seen = []
    model.stem.conv.register_forward_pre_hook(lambda conv, _: seen.append(
        (conv.bias is not None, conv.weight.is_contiguous(memory_format=torch.channels_last))))
    x = torch.randn(1, 3, 32, 32)
    fast = optimize(model, example=x, fold_bn="auto", channels_last="auto", onednn=False,
                    micro_batch=None, warmup=1, steps=3)
    assert set(fast.report.timings_ms) == {"folded_nchw", "folded_channels_last",
                                           "unfolded_nchw", "unfolded_channels_last"}
    timed = seen[4:16]  # after one warm-up step each: three rounds of four
    assert len(set(timed[:4])) == 4 and sorted(timed[4:8]) == sorted(timed[:4])
    assert timed[4] == timed[1]  # the second round starts one candidate later


def test_optimize_keeps_batchnorm_where_measured_faster_unfolded():
    for folded_cost, unfolded_cost in ((1.0, 2.0), (2.0, 1.0)):
        model = randomise_bn(create_model("resnet18", num_classes=5))
        x = torch.randn(1, 3, 32, 32)
        with torch.no_grad():
            ref = model(x)
        running = {}
        # A hook on the stem conv survives the copies optimize makes, and tells the clock
        # which candidate runs: the folded conv has a bias, the original none.
        model.stem.conv.register_forward_pre_hook(
            lambda conv, _: running.update(folded=conv.bias is not None))
        now = [0.0]

        def clock() -> float:
            now[0] += folded_cost if running.get("folded") else unfolded_cost
            return now[0]
        fast = optimize(model, example=x, fold_bn="auto", channels_last=False, onednn=False,
                        micro_batch=None, clock=clock)
        keeps_bn = unfolded_cost < folded_cost
        assert fast.report.folded == (0 if keeps_bn else 20)
        assert any(isinstance(m, nn.BatchNorm2d) for m in fast.modules()) is keeps_bn
        assert set(fast.report.timings_ms) == {"folded_nchw", "unfolded_nchw"}
        torch.testing.assert_close(fast(x), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("amp_dtype,bf16_kernels",
                         [(None, True), (torch.bfloat16, True), (torch.bfloat16, False)],
                         ids=["fp32", "bf16", "bf16-without-onednn-bf16"])
def test_optimize_folds_unmeasured_where_onednn_fusion_follows(amp_dtype, bf16_kernels,
                                                               monkeypatch):
    # On a CPU the unfolded model would lose every conv-activation fusion, so it is not raced;
    # in bf16 where oneDNN has no bf16 kernels (no oneDNN stage) folding stays a measured
    # choice. The clock makes unfolded steps 10x cheaper: raced, they would win.
    from cnnzoo.perf import onednn
    if not bf16_kernels:
        monkeypatch.setattr(onednn, "_bf16_kernels", lambda: False)
    model = randomise_bn(create_model("resnet18", num_classes=5))
    running = {}
    model.stem.conv.register_forward_pre_hook(
        lambda conv, _: running.update(folded=conv.bias is not None))
    now = [0.0]

    def clock() -> float:
        now[0] += 10.0 if running.get("folded") else 1.0
        return now[0]
    x = torch.randn(2, 3, 32, 32)
    fast = optimize(model, example=x, fold_bn="auto", channels_last=False, micro_batch=None,
                    amp_dtype=amp_dtype, clock=clock)
    unfolded_raced = any(k.startswith("unfolded") for k in fast.report.timings_ms)
    fused = onednn_available(amp_dtype or torch.float32)
    assert fused is (onednn_available() and (amp_dtype is None or bf16_kernels))
    assert unfolded_raced is not fused
    assert (fast.report.folded == 20) is fused
    fused_name = "folded_nchw_cast_onednn" if amp_dtype else "folded_nchw_onednn"
    assert (fused_name in fast.report.timings_ms) is fused


def test_optimize_compile_path_runs_and_keeps_outputs():
    model = randomise_bn(create_model("lenet5"))
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        ref = model(x)
    fast = optimize(model, channels_last=False, compile=True, compile_backend="eager")
    assert fast.report.compiled == "eager"
    torch.testing.assert_close(fast(x), ref, rtol=1e-4, atol=1e-4)


def test_optimize_low_precision_by_autocast_or_by_weights_cast_once():
    model = randomise_bn(create_model("resnet18", num_classes=5))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
    fast = optimize(model, example=x, fold_bn=True, channels_last=False, onednn=False,
                    amp_dtype=torch.bfloat16)
    assert fast.report.amp in ("bfloat16 autocast", "bfloat16 weights cast")
    assert set(fast.report.timings_ms) == {"folded_nchw", "folded_nchw_cast"}
    for cast in (False, True):
        m = fast.model.to(torch.bfloat16 if cast else torch.float32)
        low = InferenceModel(m, amp_dtype=torch.bfloat16, cast=cast)
        out = low(x)
        assert out.dtype == torch.bfloat16
        torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.05 * ref.abs().max())
        # The split calls of the model contract take float32 in, as the original did.
        split = low.forward_head(low.forward_features(x).float())
        torch.testing.assert_close(split.float(), out.float(), rtol=0.05, atol=0.05)


@pytest.mark.parametrize("bf16_kernels", [True, False], ids=["onednn-bf16", "without"])
def test_optimize_fuses_bf16_convs_on_weights_cast_once(bf16_kernels, monkeypatch):
    from cnnzoo.perf import onednn
    if not bf16_kernels:
        monkeypatch.setattr(onednn, "_bf16_kernels", lambda: False)
    model = randomise_bn(create_model("resnet18", num_classes=5))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
    fast = optimize(model, example=x, fold_bn=True, channels_last=True, onednn=True,
                    amp_dtype=torch.bfloat16, micro_batch=None)
    fused = [m for m in fast.model.modules() if isinstance(m, onednn.FusedConv2d)]
    expect = onednn_available(torch.bfloat16)
    assert expect is (bf16_kernels and onednn_available())
    assert (fast.report.onednn == len(fused) == 20) is expect
    if expect:
        # Asked for (onednn=True), the fused model is the only candidate left, on bf16 weights.
        assert fast.report.amp == "bfloat16 weights cast"
        assert {m.packed.dtype for m in fused} == {torch.bfloat16}
    out = fast(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, rtol=0.03, atol=0.03 * ref.abs().max())


# bf16 takes the paths fp32 does, on weights cast once: every family must still run and give
# the float32 logits to bf16's rounding. Ops with no bf16 kernel on a CPU (AlexNet's LRN pools
# in 3-d) leave the model under autocast, which runs them in float32.
@pytest.mark.parametrize("name", FAMILIES.values(), ids=FAMILIES.keys())
def test_optimize_in_bf16_keeps_outputs_for_one_model_of_every_family(name):
    model, x, ref = _family_case(name)
    fast = optimize(model, example=x, fold_bn=True, channels_last=True, onednn=True,
                    amp_dtype=torch.bfloat16, micro_batch=2)
    out = fast(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, rtol=0.02, atol=0.02 * ref.abs().max(),
                               msg=lambda m: f"{name} in bf16 ({fast.report.describe()}): {m}")
    cast = fast.report.amp == "bfloat16 weights cast"
    assert cast or fast.report.amp == "bfloat16 autocast"
    assert (fast.report.onednn > 0) is (cast and onednn_available(torch.bfloat16))


def test_optimize_can_hand_the_model_to_onnxruntime():
    model = randomise_bn(create_model("resnet18", num_classes=5))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
    fast = optimize(model, example=x, fold_bn=True, channels_last=True, onnxruntime=True)
    assert fast.report.onnxruntime and not fast.channels_last
    torch.testing.assert_close(fast(x), ref, rtol=1e-4, atol=1e-4)
    assert isinstance(fast.forward_features(x), torch.Tensor)  # the torch model stays usable



def _ort_clock(monkeypatch, cost_of_batch, torch_cost=None, model=None):
    """A clock advanced by each ONNX Runtime run (by its batch) and, if given, each torch run."""
    from cnnzoo.perf import onnxrt
    now = [0.0]
    real = onnxrt.OrtRunner.run_numpy

    def run(self, x):
        now[0] += cost_of_batch(x.shape[0])
        return real(self, x)
    monkeypatch.setattr(onnxrt.OrtRunner, "run_numpy", run)
    if torch_cost is not None:
        model.stem.conv.register_forward_pre_hook(
            lambda *_: now.__setitem__(0, now[0] + torch_cost))
    return lambda: now[0]


@pytest.mark.parametrize("cost, pick", [(lambda b: 1.0 + 0.1 * b, None),  # per call: whole
                                        (lambda b: b * b, 2)])  # per sample, superlinear
def test_onnxruntime_slices_the_batch_where_measured_faster(monkeypatch, cost, pick):
    model = randomise_bn(create_model("resnet18", num_classes=5))
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
    fast = optimize(model, example=x, channels_last="auto", onnxruntime=True,
                    clock=_ort_clock(monkeypatch, cost))
    # Forced, ONNX Runtime races only its own slicings: no torch layout or oneDNN candidate.
    assert set(fast.report.timings_ms) == {"onnxruntime", "onnxruntime_mb2", "onnxruntime_mb4"}
    assert fast.report.onnxruntime and fast.report.micro_batch == pick
    assert fast.report.onednn == 0 and not fast.channels_last
    torch.testing.assert_close(fast(x), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("ort_cost, expect_ort", [(0.5, True), (5.0, False)])
def test_auto_onnxruntime_races_the_torch_model_chosen_so_far(monkeypatch, ort_cost, expect_ort):
    model = randomise_bn(create_model("resnet18", num_classes=5))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
    clock = _ort_clock(monkeypatch, lambda b: ort_cost, torch_cost=1.0, model=model)
    fast = optimize(model, example=x, fold_bn=True, channels_last=False, onednn=False,
                    micro_batch=None, onnxruntime="auto", clock=clock)
    assert fast.report.onnxruntime is expect_ort
    assert fast.report.timings_ms == {"folded_nchw": 1000.0, "onnxruntime": 1000 * ort_cost}
    torch.testing.assert_close(fast(x), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("onnxruntime", [True, "auto"])
def test_onnxruntime_gets_densenet_without_the_pre_activation_fold(monkeypatch, onnxruntime):
    # Per-channel clamps are no op ONNX Runtime fuses: it runs BN -> ReLU itself, faster.
    from cnnzoo.perf.preact import ClampPerChannel
    model = randomise_bn(create_model("densenet121", num_classes=5))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
    clock = _ort_clock(monkeypatch, lambda b: 0.5, torch_cost=1.0, model=model)
    fast = optimize(model, example=x, fold_bn=True, channels_last=False, onednn=False,
                    micro_batch=None, onnxruntime=onnxruntime, clock=clock)
    assert fast.report.onnxruntime and fast.report.preact == 0 and fast.report.folded > 0
    assert not any(isinstance(m, ClampPerChannel) for m in fast.model.modules())
    assert "BN-ReLU" not in fast.report.describe()
    torch.testing.assert_close(fast(x), ref, rtol=1e-4, atol=1e-4)


def test_optimize_rejects_unknown_choices():
    model = create_model("lenet5")
    for kwargs in ({"channels_last": "sometimes"}, {"compile": "maybe"}, {"onnxruntime": 1.5}):
        try:
            optimize(model, **kwargs)
        except ValueError as exc:
            assert "True, False or 'auto'" in str(exc)
        else:
            raise AssertionError(kwargs)


def test_optimize_rejects_bad_micro_batches():
    model = create_model("lenet5")
    for value in (0, -2, True, "often", 2.5):
        try:
            optimize(model, micro_batch=value)
        except ValueError as exc:
            assert "micro_batch" in str(exc)
        else:
            raise AssertionError(value)


def test_optimize_keeps_the_onednn_fusion_only_where_measured_faster(monkeypatch):
    if not onednn_available():
        return  # nothing to choose between: the choice is covered where oneDNN exists
    from cnnzoo.perf import onednn
    running = {}
    fused_forward = onednn.FusedConv2d.forward

    def spy(self, *args):
        running["fused"] = True
        return fused_forward(self, *args)
    monkeypatch.setattr(onednn.FusedConv2d, "forward", spy)
    for fused_cost, plain_cost in ((1.0, 2.0), (2.0, 1.0)):
        model = randomise_bn(create_model("resnet18", num_classes=5))
        model.stem.conv.register_forward_pre_hook(lambda *_: running.update(fused=False))
        now = [0.0]

        def clock() -> float:
            now[0] += fused_cost if running.get("fused") else plain_cost
            return now[0]
        x = torch.randn(2, 3, 32, 32)
        fast = optimize(model, example=x, fold_bn=True, channels_last=False, onednn="auto",
                        micro_batch=None, clock=clock)
        assert set(fast.report.timings_ms) == {"folded_nchw", "folded_nchw_onednn"}
        assert (fast.report.onednn > 0) is (fused_cost < plain_cost)
        with torch.no_grad():
            torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-4)


def test_micro_batches_join_tensors_and_tuples_as_the_whole_batch_would():
    class Two(nn.Module):
        def forward(self, x):
            return x * 2, x.sum(dim=(1, 2, 3))
    x = torch.randn(7, 3, 4, 4)
    for inner, expect in ((nn.Conv2d(3, 2, 1), None), (Two(), None)):
        inner.eval()
        with torch.no_grad():
            expect = inner(x)
        got = InferenceModel(inner, micro_batch=3)(x)  # slices of 3, 3 and 1
        if isinstance(expect, tuple):
            assert type(got) is tuple and len(got) == 2
            for g, e in zip(got, expect):
                torch.testing.assert_close(g, e)
        else:
            torch.testing.assert_close(got, expect)
    googlenet = create_model("googlenet", aux_logits=True, num_classes=4).train()
    outs = InferenceModel(googlenet, micro_batch=1)._in_pieces(googlenet, torch.randn(2, 3, 64, 64))
    assert type(outs).__name__ == "InceptionOutputs" and outs.logits.shape == (2, 4)
    # Called whole, a training-mode model keeps its aux outputs: its head is not split off.
    outs = InferenceModel(googlenet, micro_batch=1)(torch.randn(2, 3, 64, 64))
    assert type(outs).__name__ == "InceptionOutputs" and outs.logits.shape == (2, 4)


def test_micro_batches_slice_the_body_and_run_the_head_once_on_the_whole_batch():
    model = create_model("vgg11", num_classes=5).eval()
    seen = []
    model.head.fc.register_forward_hook(lambda mod, args, out: seen.append(args[0].shape[0]))
    x = torch.randn(7, 3, 32, 32)  # VGG's adaptive pool takes any size
    with torch.no_grad():
        expect = model(x)
    seen.clear()
    got = InferenceModel(model, micro_batch=2)(x)
    assert seen == [7]  # one call with every sample, not four
    torch.testing.assert_close(got, expect, rtol=1e-5, atol=1e-5)
    # A model whose forward need not be head(features) is sliced whole.
    plain = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(2 * 30 * 30, 3)).eval()
    sizes = []
    plain[2].register_forward_hook(lambda mod, args, out: sizes.append(args[0].shape[0]))
    InferenceModel(plain, micro_batch=2)(x)
    assert sizes == [2, 2, 2, 1]


def test_optimize_picks_the_micro_batch_the_clock_says_is_fastest():
    # Each forward costs what the hook says for the batch its first conv sees; the clock
    # reads the total. Then the early slices (tests/test_optimize_early.py) race the pick:
    # the stem's conv, the one piece the hook costs, is all they slice.
    for cost, expect, early in ((lambda b: 1.0 + 0.1 * b, None, None),
                                (lambda b: 0.1 * b * b, 2, (4, 1))):
        model = randomise_bn(create_model("resnet18", num_classes=5))
        now = [0.0]
        model.stem.conv.register_forward_pre_hook(
            lambda _, args: now.__setitem__(0, now[0] + cost(args[0].shape[0])))
        x = torch.randn(8, 3, 32, 32)
        fast = optimize(model, example=x, fold_bn=True, channels_last=False, onednn=False,
                        micro_batch="auto", clock=lambda: now[0])
        picked = "folded_nchw" + (f"_mb{expect}" if expect else "")
        raced = {f"{picked}_early4x{rows}" for rows in (1, 2) if rows < (expect or 8)}
        assert set(fast.report.timings_ms) == {"folded_nchw", "folded_nchw_mb2",
                                               "folded_nchw_mb4"} | raced
        assert fast.report.micro_batch == expect
        assert fast.report.early == early
        assert fast.report.timings_ms["folded_nchw_mb2"] == pytest.approx(
            1000 * 4 * cost(2))
        assert fast.report.timings_ms[f"{picked}_early4x1"] == pytest.approx(1000 * 8 * cost(1))
        with torch.no_grad():
            torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-4)


def test_onnxruntime_runner_matches_torch_from_module_and_from_file(tmp_path):
    model = randomise_bn(create_model("resnet18", num_classes=7))
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    runner = OrtRunner(model, example=x[:1], threads=1)
    torch.testing.assert_close(runner(x), ref, rtol=1e-4, atol=1e-4)  # batch axis is dynamic
    path = tmp_path / "r18.onnx"
    path.write_bytes(export_onnx_bytes(model, x[:1]))
    torch.testing.assert_close(OrtRunner(path, threads=1)(x), ref, rtol=1e-4, atol=1e-4)


def test_gmacs_match_the_reference_table():
    ref = {(r[0], int(r[1])): float(r[2]) for r in read_reference("macs.tsv")}
    model = create_model("resnet18")
    assert abs(count_gmacs(model, (3, 224, 224)) - ref[("resnet18", 224)]) < 0.01


def _ticking_clock(step: float = 0.5):
    now = [0.0]

    def clock() -> float:
        now[0] += step
        return now[0]
    return clock


def test_bench_row_has_timm_columns_and_rates_from_the_clock():
    s = BenchSettings(batch_size=2, img_size=32, mode="both", warmup=1, steps=3)
    row = bench_model("resnet18", s, clock=_ticking_clock(0.5))
    # Each timed step spans two ticks (start, end after sync); the run spans 2 * 3 + 1 ticks.
    assert row["infer_step_time"] == row["train_step_time"] == 500.0
    assert row["infer_samples_per_sec"] == row["train_samples_per_sec"] == round(2 * 3 / 3.5, 2)
    assert row["infer_batch_size"] == 2 and row["infer_img_size"] == 32
    assert row["param_count"] == round(registered_param_count("resnet18") / 1e6, 2)
    assert row["infer_gmacs"] > 0


def test_amp_paths_run_on_cpu_bf16_and_fp16_with_loss_scaling():
    for dtype, scaled in (("bfloat16", False), ("float16", True)):
        s = BenchSettings(batch_size=2, img_size=32, amp=True, amp_dtype=dtype, warmup=1,
                          steps=2, mode="both")
        assert s.autocast_dtype() == getattr(torch, dtype)
        assert grad_scaler(s).is_enabled() is scaled
        torch.manual_seed(0)  # this seed overflows fp16 on the first step: the skip path runs
        model = create_model("resnet18", num_classes=4)
        before = model.head.fc.weight.detach().clone()
        result = benchmark_train(model, s, (3, 32, 32), clock=_ticking_clock())
        assert result["train_batch_size"] == 2
        # fp16's first steps may be skipped while the loss scale backs off from 2**16, but an
        # overflowing step must never reach the weights (torch 2.14's fused CPU SGD let it).
        assert all(torch.isfinite(p).all() for p in model.parameters())
        if not scaled:
            assert not torch.equal(before, model.head.fc.weight), "the optimiser never stepped"
        infer, how = benchmark_inference(create_model("resnet18"), s, (3, 32, 32),
                                         clock=_ticking_clock())
        assert infer["infer_step_time"] == 500.0 and how == "eager"


def test_synchronizer_waits_only_where_the_device_is_asynchronous():
    assert synchronizer("cpu")() is None
    assert callable(synchronizer("cuda"))  # built without touching CUDA; called only on a GPU


def test_onnxruntime_model_folds_batchnorm_and_times_nothing():
    from cnnzoo.perf.optimize import onnxruntime_model
    model = randomise_bn(create_model("resnet18", num_classes=10)).eval()
    fast = onnxruntime_model(model, "resnet18")
    # predict and eval call it for one command: no candidate may be raced for it.
    assert fast.report.timings_ms == {}
    assert fast.report.onnxruntime and fast.report.folded == 20
    x = torch.randn(3, 3, 224, 224)  # another batch than the export's and its check's
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), atol=1e-4, rtol=1e-4)


def test_predict_in_channels_last_runs_nhwc_and_agrees():
    from cnnzoo.engine.predict import predict
    model = randomise_bn(create_model("resnet18", num_classes=10)).eval()
    images = list(torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    plain = predict(model, images, lambda t: t, k=10)
    seen = []
    hook = model.get_submodule("stem.conv").register_forward_pre_hook(
        lambda m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    nhwc = predict(model, images, lambda t: t, k=10, channels_last=True)
    hook.remove()
    assert seen == [True] and model.stem.conv.weight.is_contiguous(
        memory_format=torch.channels_last)
    for a, b in zip(plain, nhwc):
        assert dict(a).keys() == dict(b).keys()
        assert max(abs(dict(a)[i] - dict(b)[i]) for i in dict(a)) < 1e-5
