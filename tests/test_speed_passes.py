"""Speed is opt-in: what ``optimize`` reports, ``cnnzoo train``'s ``for_training``, and the
fallbacks where a PyTorch build lacks the private ops a pass uses."""
from __future__ import annotations

import types

import torch
from torch import nn

import cnnzoo
from cnnzoo.cli import main
from cnnzoo.engine import trainer as trainer_module
from cnnzoo.perf import nnpack, onednn, pooling
from cnnzoo.perf.training import Conv2d, DepthwiseConv2d, count_twins

from conftest import randomise_bn

FAST = ["--epochs", "1", "--limit-batches", "1", "-b", "8", "--no-augment", "--img-size", "32"]


def test_optimize_reports_the_passes_its_model_runs():
    torch.manual_seed(0)
    model = randomise_bn(cnnzoo.create_model("mobilenet_v3_small"))
    x = torch.randn(4, 3, 64, 64)
    fast = cnnzoo.optimize(model, example=x, channels_last=False, micro_batch=None, steps=1,
                           warmup=0)
    passes = fast.report.passes
    assert passes and passes == list(dict.fromkeys(passes))
    assert fast.report.gemm_gates and f"{fast.report.gemm_gates} gate convs as GEMMs" in passes
    assert fast.report.folded and f"{fast.report.folded} BN folded" in passes
    assert "NCHW" in passes and fast.report.describe() == ", ".join(passes)
    if fast.report.onednn:
        assert f"{fast.report.onednn} convs fused for oneDNN" in passes
    # The input model is untouched: still its plain torch layers, BatchNorm in place.
    assert all(type(m) is nn.Conv2d for m in model.modules() if isinstance(m, nn.Conv2d))
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-4)


def _without_private_ops(monkeypatch):
    # What a PyTorch build without oneDNN's private ops or NNPACK looks like to the passes.
    monkeypatch.setattr(torch.ops, "mkldnn", types.SimpleNamespace(), raising=False)
    monkeypatch.delattr(torch, "mkldnn_max_pool2d", raising=False)
    monkeypatch.delattr(torch, "_nnpack_spatial_convolution", raising=False)
    onednn._bf16_kernels.cache_clear()


def test_without_torchs_private_ops_the_passes_fall_back_to_plain_torch(monkeypatch):
    _without_private_ops(monkeypatch)
    assert not onednn.available() and not onednn.available(torch.bfloat16)
    assert not nnpack.available() and not pooling.available()
    torch.manual_seed(0)
    model = randomise_bn(cnnzoo.create_model("resnet18"))
    x = torch.randn(4, 3, 64, 64)
    fast = cnnzoo.optimize(model, example=x, steps=1, warmup=0)
    assert fast.report.onednn == 0 and fast.report.nnpack == 0
    assert not any("oneDNN" in p or "NNPACK" in p for p in fast.report.passes)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-4)
    # A pooling twin put in place by hand still computes torch's result without them.
    pool = nn.MaxPool2d(3, 2, padding=1)
    pooling.use_onednn_pooling(pool)
    with torch.no_grad():
        assert torch.equal(pool(x), nn.functional.max_pool2d(x, 3, 2, 1))


def _spy(monkeypatch) -> list:
    calls = []
    real = trainer_module.for_training

    def spy(model, **kwargs):
        calls.append(model)
        return real(model, **kwargs)
    monkeypatch.setattr(trainer_module, "for_training", spy)
    return calls


def test_cnnzoo_train_applies_for_training_and_saves_plain_weights(monkeypatch, tmp_path):
    calls = _spy(monkeypatch)
    run = tmp_path / "run"
    assert main(["train", "mobilenet_v3_small", "--data", "digits", "-o", str(run), *FAST]) == 0
    assert len(calls) == 1
    model = calls[0]
    assert count_twins(model) > 0
    assert any(type(m) is DepthwiseConv2d for m in model.modules())
    assert any(type(m) is Conv2d for m in model.modules())
    # What was saved loads into the plain model, key for key.
    plain = cnnzoo.create_model("mobilenet_v3_small", num_classes=10, in_chans=1)
    assert set(plain.state_dict()) == set(model.state_dict())


def test_cnnzoo_train_plain_trains_the_model_as_built(monkeypatch, tmp_path):
    calls = _spy(monkeypatch)
    run = tmp_path / "run"
    assert main(["train", "lenet5", "--data", "digits", "-o", str(run), "--plain", *FAST]) == 0
    assert calls == []


def test_torchs_own_fx_tracer_still_traces_a_model_after_the_passes():
    # The twins are no torch.nn classes, so fx traces into them: each must record the plain op.
    from cnnzoo.perf.inplace import use_inplace
    from cnnzoo.perf.training import for_training

    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 64)
    for passes in ((for_training,), (use_inplace, pooling.use_onednn_pooling)):
        model = randomise_bn(cnnzoo.create_model("resnet18", attn="se"))
        for apply in passes:
            apply(model)
        model.eval()
        gm = torch.fx.symbolic_trace(model)
        with torch.no_grad():
            assert torch.equal(gm(x), model(x)), passes
        model.train()
        torch.fx.symbolic_trace(model)  # the training-mode graph too
