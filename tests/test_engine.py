from __future__ import annotations

import csv
from typing import NamedTuple

import pytest
import torch
from datagen import make_idx_folder, make_image_folder

from cnnzoo.engine import TrainConfig, compute_loss, train
from cnnzoo.engine.checkpoint import load_checkpoint, save_weights
from cnnzoo.engine.distributed import DistInfo
from cnnzoo.engine.freeze import freeze
from cnnzoo.engine.optim import build_optimizer, fast_optimizer, lr_factor
from cnnzoo.errors import WeightsError
from cnnzoo.registry import create_model
from cnnzoo.weights.io import load_state_dict

QUIET = dict(log=lambda *_: None)


def _losses(run) -> list[float]:
    with open(run / "metrics.csv") as f:
        return [float(r["train_loss"]) for r in csv.DictReader(f)]


def _tiny(**kw) -> TrainConfig:
    base = dict(model="lenet5", epochs=2, batch_size=16, opt="adamw", lr=3e-3, sched="constant",
                limit_batches=6, augment=False)
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("kind", ["image_folder", "idx_folder", "digits"])
def test_a_few_steps_on_each_data_source_lower_the_loss(tmp_path, kind):
    if kind == "image_folder":
        data = str(make_image_folder(tmp_path / "imgs", per_class=16))
    elif kind == "idx_folder":
        data = str(make_idx_folder(tmp_path / "idx", n=160))
    else:
        data = "digits"
    run = tmp_path / "run"
    result = train(_tiny(data=data, val_split=0.25), run, DistInfo(), **QUIET)
    losses = _losses(run)
    assert len(losses) == 2 and losses[-1] < losses[0]
    assert result["val_count"] > 0
    for name in ("config.json", "metrics.csv", "curves.png", "best.safetensors",
                 "last.safetensors", "last.state.safetensors", "split.json"):
        assert (run / name).is_file(), name


class _Stop(Exception):
    pass


def test_resume_after_stopping_gives_the_uninterrupted_weights(tmp_path):
    # Augmentation, dropout-free SGD with momentum, a cosine schedule and EMA: every piece of
    # state a resume must restore (RNG, optimizer, scheduler, EMA) is exercised.
    cfg = _tiny(opt="sgd", lr=0.05, sched="cosine", augment=True, ema_decay=0.9,
                deterministic=True, epochs=3, limit_batches=4)
    train(cfg, tmp_path / "full", DistInfo(), **QUIET)

    def stop_after_first(epoch, _row):
        if epoch == 1:
            raise _Stop

    with pytest.raises(_Stop):
        train(cfg, tmp_path / "cut", DistInfo(), on_epoch_end=stop_after_first, **QUIET)
    train(cfg, tmp_path / "cut", DistInfo(), resume=True, **QUIET)
    full = load_state_dict(tmp_path / "full" / "last.safetensors")
    cut = load_state_dict(tmp_path / "cut" / "last.safetensors")
    assert full.keys() == cut.keys()
    assert all(torch.equal(full[k], cut[k]) for k in full)
    assert _losses(tmp_path / "full") == _losses(tmp_path / "cut")


def test_weights_and_state_from_different_saves_are_refused(tmp_path):
    run = tmp_path / "run"
    train(_tiny(epochs=1, limit_batches=2), run, DistInfo(), **QUIET)
    weights = load_state_dict(run / "last.safetensors")
    save_weights(run / "last.safetensors", weights, {"checkpoint_id": "another-save"})
    with pytest.raises(WeightsError, match="different saves"):
        load_checkpoint(run)


def test_frozen_weights_stay_bit_identical_while_the_head_learns(tmp_path):
    src = tmp_path / "pre.safetensors"
    save_weights(src, create_model("lenet5").state_dict(), {})
    run = tmp_path / "run"
    train(_tiny(pretrained=str(src), freeze="features.c3", epochs=2), run, DistInfo(), **QUIET)
    before, after = load_state_dict(src), load_state_dict(run / "last.safetensors")
    for key in ("features.c1.conv.weight", "features.c3.conv.bias"):
        assert torch.equal(before[key], after[key]), key
    assert not torch.equal(before["head.fc.weight"], after["head.fc.weight"])


def test_unfreeze_at_trains_the_backbone_from_that_epoch(tmp_path):
    run = tmp_path / "run"
    src = tmp_path / "pre.safetensors"
    save_weights(src, create_model("lenet5").state_dict(), {})
    train(_tiny(pretrained=str(src), freeze="all-but-head", unfreeze_at=2, epochs=2), run,
          DistInfo(), **QUIET)
    after = load_state_dict(run / "last.safetensors")
    assert not torch.equal(load_state_dict(src)["features.c1.conv.weight"],
                           after["features.c1.conv.weight"])


def test_freeze_of_an_unknown_module_names_the_candidates():
    from cnnzoo.errors import CnnzooError
    with pytest.raises(CnnzooError, match="features"):
        freeze(create_model("lenet5"), "stages.9")


class _AuxOut(NamedTuple):
    logits: torch.Tensor
    aux_logits: tuple


def test_aux_heads_add_their_weighted_losses():
    torch.manual_seed(0)
    labels = torch.tensor([0, 1, 2])
    main, a1, a2 = torch.randn(3, 3), torch.randn(3, 3), torch.randn(3, 3)
    ce = torch.nn.CrossEntropyLoss()
    got = compute_loss(_AuxOut(main, (a1, a2)), labels, ce, (0.3, 0.5))
    assert torch.allclose(got, ce(main, labels) + 0.3 * ce(a1, labels) + 0.5 * ce(a2, labels))
    assert torch.allclose(compute_loss(main, labels, ce, None), ce(main, labels))


def test_norms_and_biases_get_no_weight_decay():
    model = create_model("resnet18", num_classes=4)
    opt = build_optimizer(model, "sgd", lr=0.1, weight_decay=1e-4)
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    for name, p in model.named_parameters():
        assert (id(p) in decayed) == (p.ndim > 1), name


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_sgd_and_adamw_step_on_the_fused_kernel_and_match_the_plain_update(name):
    def net():
        # Smooth, so no gradient sits near zero, where Adam's g / sqrt(v) turns any two
        # roundings of it into different steps (resnet18's ReLUs: 3e-6 apart at lr=1e-3).
        return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16),
                                   torch.nn.Tanh(), torch.nn.Linear(16, 4))

    torch.manual_seed(0)
    model, twin = net(), net()
    twin.load_state_dict(model.state_dict())
    fused = build_optimizer(model, name, lr=0.05, weight_decay=1e-2, nesterov=True)
    assert all(g["fused"] for g in fused.param_groups) and len(fused.param_groups) == 2
    # The same groups over the twin's parameters, on torch's plain per-tensor loop.
    twin_of = {id(p): q for p, q in zip(model.parameters(), twin.parameters())}
    groups = [{**{k: v for k, v in g.items() if k not in ("params", "fused", "foreach")},
               "params": [twin_of[id(p)] for p in g["params"]]} for g in fused.param_groups]
    plain = type(fused)(groups, foreach=False)
    x, y = torch.randn(32, 8), torch.randint(0, 4, (32,))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    for _ in range(3):  # later steps read the momentum / moments the first one wrote
        for m, opt in ((model, fused), (twin, plain)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(m(x), y).backward()
            opt.step()
    for (key, a), b in zip(model.state_dict().items(), twin.state_dict().values()):
        assert not torch.equal(a, start[key]), key  # it did step
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=key)


def test_fast_optimizer_falls_back_where_fused_is_refused_or_unsafe():
    class NoFusedHere(torch.optim.SGD):
        def __init__(self, params, fused=None, **kw):
            if fused:
                raise RuntimeError("no fused kernel for this device")
            super().__init__(params, **kw)

    p = torch.nn.Parameter(torch.randn(3))
    assert not NoFusedHere([p], fused=False, lr=0.1).defaults.get("fused")
    opt = fast_optimizer(NoFusedHere, [{"params": [p]}], lr=0.1)
    assert type(opt) is NoFusedHere and not opt.defaults.get("fused")
    # fp16 loss scaling on a CPU keeps the plain step (see fast_optimizer's docstring).
    assert not fast_optimizer(torch.optim.SGD, [{"params": [p]}], scaled=True,
                              lr=0.1).defaults.get("fused")
    assert fast_optimizer(torch.optim.SGD, [{"params": [p]}], lr=0.1).defaults["fused"]
    # RMSprop has no fused kernel in torch 2.14: built plain.
    rms = build_optimizer(torch.nn.Linear(2, 2), "rmsprop", lr=0.1)
    assert not rms.defaults.get("fused")


def test_warmup_then_cosine_reaches_zero():
    kw = dict(schedule="cosine", total_steps=100, warmup_steps=10)
    factors = [lr_factor(s, **kw) for s in range(101)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
    assert factors[100] == pytest.approx(0.0, abs=1e-9)
    step = [lr_factor(s, schedule="step", total_steps=90, steps_per_epoch=3, step_epochs=10)
            for s in (0, 29, 30, 60)]
    assert step == pytest.approx([1.0, 1.0, 0.1, 0.01])
