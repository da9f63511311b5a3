"""The body as a chain of pieces (``ZooNet.feature_pieces``), and optimize's early slices.

Nothing is timed: where optimize races candidates, a fake clock decides.
"""
from __future__ import annotations

import importlib
import itertools
from collections.abc import Callable

import pytest
import torch

from cnnzoo import create_model, list_models
from cnnzoo.models.base import ZooNet
from cnnzoo.perf import InferenceModel, optimize

from conftest import randomise_bn, small_input, smallest_per_family

FAMILIES = smallest_per_family()
# The families whose forward_features is a plain chain of children, as the optimize stage
# needs; a family that stops being one should say so here.
CHAINED = {"mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "resnet18", "densenet121",
           "vgg11", "alexnet", "lenet5", "inception_v4", "bn_inception", "drn_c_26"}


def _owner(cls: type, attr: str) -> type:
    return next(k for k in cls.__mro__ if attr in vars(k))


@pytest.mark.parametrize("name", FAMILIES.values(), ids=FAMILIES.keys())
def test_the_pieces_in_turn_compute_forward_features(name):
    torch.manual_seed(0)
    model = randomise_bn(create_model(name)).eval()
    pieces = model.feature_pieces()
    if not model.feature_chain:
        assert pieces == []
        return
    assert len(pieces) > len(model.feature_chain)  # the Sequentials were opened
    x = small_input(name)
    with torch.no_grad():
        y = x
        for piece in pieces:
            y = piece(y)
        assert torch.equal(y, model.forward_features(x))


def test_the_chained_families_declare_their_chain():
    for name in CHAINED:
        assert create_model(name).feature_chain, name


def _subclasses(cls: type) -> list[type]:
    return [c for sub in cls.__subclasses__() for c in (sub, *_subclasses(sub))]


def test_no_model_class_inherits_a_chain_its_own_forward_features_breaks():
    # A class that writes forward_features anew must declare its chain anew (or () where it
    # is no chain): the parent's would name the wrong pieces.
    list_models()  # every family module imported
    classes = _subclasses(ZooNet)
    for name in FAMILIES.values():
        assert type(create_model(name)) in classes, name
    for cls in classes:
        chain_from = _owner(cls, "feature_chain")
        assert chain_from is ZooNet or chain_from is _owner(cls, "forward_features") \
            or not cls.feature_chain, cls.__name__


def test_early_slices_keep_the_outputs_and_features():
    torch.manual_seed(0)
    model = randomise_bn(create_model("mobilenet_v2")).eval()
    x = small_input("mobilenet_v2", batch=5)
    with torch.no_grad():
        ref, ref_features = model(x), model.forward_features(x)
    for early, mb in itertools.product(((1, 1), (3, 2), (4, 3)), (None, 2)):
        fast = InferenceModel(model, early=early, micro_batch=mb)
        torch.testing.assert_close(fast(x), ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fast.forward_features(x), ref_features, rtol=1e-5,
                                   atol=1e-5)


def test_early_slices_run_the_first_pieces_that_many_at_a_time():
    model = create_model("resnet18").eval()
    pieces = model.feature_pieces()
    assert pieces[0] is model.stem.conv  # the stem's Sequential opened
    seen = {"first": [], "second": []}
    pieces[0].register_forward_hook(lambda m, a, o: seen["first"].append(a[0].shape[0]))
    pieces[1].register_forward_hook(lambda m, a, o: seen["second"].append(a[0].shape[0]))
    InferenceModel(model, early=(1, 2))(torch.randn(5, 3, 64, 64))
    assert seen == {"first": [2, 2, 1], "second": [5]}


@pytest.mark.parametrize("early", [(0, 1), (99, 1), (2, 0)])
def test_early_slices_must_name_real_pieces(early):
    with pytest.raises(ValueError, match="early"):
        InferenceModel(create_model("resnet18"), early=early)


def test_early_slices_need_a_chained_cnnzoo_model():
    with pytest.raises(ValueError, match="cnnzoo model"):
        InferenceModel(torch.nn.Conv2d(3, 3, 1), early=(1, 1))


def _fake_race(winner: Callable[[list[str]], str], seen: list | None = None):
    """A race that runs nothing: 1 ms for the name ``winner`` picks, 1 s for the others."""
    def race(candidates, **kw):
        names = list(candidates)
        if seen is not None:
            seen.append(names)
        best = winner(names)
        return {n: [0.001 if n == best else 1.0] for n in names}
    return race


def test_optimize_races_early_slices_and_reports_the_winner(monkeypatch):
    opt = importlib.import_module("cnnzoo.perf.optimize")  # the name is the function's
    seen: list[list[str]] = []
    # The whole batch wins the micro-batch race; then the last early candidate wins its own.
    monkeypatch.setattr(opt, "race", _fake_race(
        lambda names: next((n for n in reversed(names) if "_early" in n), names[0]), seen))
    model = create_model("mobilenet_v2")
    x = torch.randn(4, 3, 64, 64)
    fast = optimize(model, example=x, channels_last=False, onednn=False, warmup=0, steps=1)
    # The stem takes 64 -> 32 and the first stage keeps 32; the second brings 16, a quarter.
    assert seen[-1] == ["folded_nchw", "folded_nchw_early3x1", "folded_nchw_early3x2"]
    assert fast.report.early == (3, 2) and fast.early == (3, 2)
    assert "first 3 body pieces 2 at a time" in fast.report.describe()
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model.eval()(x), rtol=1e-4, atol=1e-4)


def test_optimize_keeps_the_whole_body_when_early_slices_lose(monkeypatch):
    opt = importlib.import_module("cnnzoo.perf.optimize")  # the name is the function's
    seen: list[list[str]] = []
    monkeypatch.setattr(opt, "race", _fake_race(lambda names: names[0], seen))
    fast = optimize(create_model("mobilenet_v2"), example=torch.randn(4, 3, 64, 64),
                    channels_last=False, onednn=False, warmup=0, steps=1)
    assert any("_early" in n for names in seen for n in names)
    assert fast.report.early is None and fast.early is None


def test_optimize_tries_no_early_slices_where_the_body_is_no_chain(monkeypatch):
    opt = importlib.import_module("cnnzoo.perf.optimize")  # the name is the function's
    seen: list[list[str]] = []
    monkeypatch.setattr(opt, "race", _fake_race(lambda names: names[0], seen))
    model = create_model("googlenet")
    assert not model.feature_chain
    optimize(model, example=small_input("googlenet", batch=4), channels_last=False,
             onednn=False, warmup=0, steps=1)
    assert seen and not any("_early" in n for names in seen for n in names)
