"""Importing torchvision's and timm's weights: every peer in the table computes what ours computes.

No network: each peer is built with seeded random weights, saved to a file, loaded into ours by
the same path a user's download takes, and both run on the same input in eval mode.
"""
from __future__ import annotations

import warnings

import pytest
import torch

from cnnzoo import create_model, is_model, list_models
from cnnzoo.errors import WeightsError
from cnnzoo.weights import PretrainedWarning, available, resolve
from cnnzoo.weights.imagenet import IMAGENET_CLASSES
from cnnzoo.weights.mapping import LAYOUTS, PEERS

from _peers import build_ours_from, build_peer, input_side, outputs_in_both_layouts

LANDED = [p for p in PEERS if is_model(p.ours)]


def _save(model, path):
    torch.save(model.state_dict(), path)
    return str(path)


# The file round trip is the same for every model; it is taken once per (source, layout), the
# rest import the peer's state dict from memory (a VGG's 530 MB written and read sixteen times
# would be most of the suite's time and prove nothing more).
_VIA_FILE = {(p.source, p.layout): p for p in reversed(LANDED)}


# Peers that compute a layer with other ops than ours, the same function summed in another
# order: timm's VGG runs its first two classifier layers as convolutions (ConvMlp: a 7x7 and a
# 1x1 conv), timm's MobileNetV3 its head's hidden layer as a 1x1 conv on the pooled map, where
# ours (and torchvision's) have linear layers. Within 5e-6 of their outputs' scale.
OTHER_OPS = {("timm", f"vgg{depth}{bn}") for depth in (11, 13, 16, 19) for bn in ("", "_bn")} | \
    {("timm", "mobilenetv3_large_100"), ("timm", "mobilenetv3_small_100")}


@pytest.mark.parametrize("peer", LANDED, ids=lambda p: f"{p.source}-{p.ours}")
def test_peer_weights_give_the_same_outputs(peer, tmp_path):
    side = input_side(peer.ours)
    theirs = build_peer(peer.source, peer.name, side)
    via_file = _VIA_FILE[peer.source, peer.layout] == peer
    ours = build_ours_from(peer.ours, _save(theirs, tmp_path / "peer.pth") if via_file
                           else theirs.state_dict())
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(2))
    (nchw, *rest) = outputs_in_both_layouts(ours, theirs, x)
    for got, want, tol in (nchw, *rest):
        assert got.shape == want.shape
        assert want.std() > 1e-3  # the comparison means something: outputs are not flat
        assert (got - want).abs().max().item() <= tol
    # NCHW, as built: the same torch ops in the same order as the peer's, so the same bits,
    # wherever the peer computes the same ops.
    if (peer.source, peer.name) not in OTHER_OPS:
        assert torch.equal(nchw[0], nchw[1]), (nchw[0] - nchw[1]).abs().max()


def test_peer_table_names_registered_models_and_known_layouts():
    # A peer may be listed before its family lands, but never under a misspelt name.
    for p in PEERS:
        assert p.layout in LAYOUTS, p
        assert p.source in ("torchvision", "timm"), p
    assert LANDED, "no peer of any registered model"
    assert all(p.ours in list_models() for p in LANDED)


def test_registered_names_that_torchvision_or_timm_also_have_are_in_the_table():
    import timm
    import torchvision
    ours = set(list_models())
    for source, theirs in (("torchvision", torchvision.models.list_models(torchvision.models)),
                           ("timm", timm.list_models())):
        covered = {p.ours for p in PEERS if p.source == source}
        assert ours & set(theirs) - covered == set(), source


def test_every_torchvision_peer_has_official_weights_listed():
    for p in LANDED:
        rows = [r for r in available(p.ours) if r.source == p.source]
        assert rows or p.source == "timm", p  # timm has a few architectures without weights
        if not rows:
            continue
        assert all(r.url.startswith("https://") for r in rows)
        assert sum(r.default for r in rows) == 1
        if p.source == "torchvision":  # torchvision names every file by its sha256 prefix
            assert all(r.sha256_prefix and r.sha256_prefix in r.file for r in rows)


def test_imagenet_class_names_are_the_thousand_in_output_order():
    import torchvision
    assert len(IMAGENET_CLASSES) == 1000 == len(set(IMAGENET_CLASSES))
    assert list(IMAGENET_CLASSES) == \
        torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]


def test_another_num_classes_reinitialises_only_the_classifier_and_says_so(tmp_path):
    theirs = build_peer("torchvision", "resnet18", 64)
    path = _save(theirs, tmp_path / "r18.pth")
    with pytest.warns(PretrainedWarning, match=r"head\.fc re-initialised for 10 classes.*1000"):
        ours = create_model("resnet18", num_classes=10, pretrained=path).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        pooled = torch.flatten(theirs.avgpool(torch.nn.Sequential(
            *list(theirs.children())[:-2])(x)), 1)
        assert torch.allclose(ours.forward_head(ours.forward_features(x), pre_logits=True),
                              pooled, atol=1e-5)
        assert ours(x).shape == (2, 10)


def test_headless_model_takes_the_backbone_and_drops_the_classifier(tmp_path):
    theirs = build_peer("torchvision", "resnet18", 64)
    with pytest.warns(PretrainedWarning, match="head.fc"):
        ours = create_model("resnet18", num_classes=0,
                            pretrained=_save(theirs, tmp_path / "r18.pth")).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert ours(x).shape == (1, 512)


def test_grey_model_sums_the_rgb_filters(tmp_path):
    theirs = build_peer("torchvision", "resnet18", 64)
    with pytest.warns(PretrainedWarning, match="3 to 1 input channels"):
        ours = create_model("resnet18", in_chans=1,
                            pretrained=_save(theirs, tmp_path / "r18.pth")).eval()
    grey = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(ours(grey), theirs(grey.expand(-1, 3, -1, -1)), atol=1e-4)


def test_weights_of_another_architecture_fail_with_one_line(tmp_path):
    theirs = build_peer("torchvision", "resnet18", 64)
    with pytest.raises(WeightsError) as err:
        create_model("resnet34", pretrained=_save(theirs, tmp_path / "r18.pth"))
    assert "does not fit resnet34" in str(err.value)
    assert "\n" not in str(err.value)


def test_weights_saved_by_cnnzoo_load_back_unchanged(tmp_path):
    from cnnzoo.weights import save_state_dict
    a = create_model("resnet18").eval()
    save_state_dict(a.state_dict(), tmp_path / "a.safetensors")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing skipped, nothing to warn about
        b = create_model("resnet18", pretrained=str(tmp_path / "a.safetensors")).eval()
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_unknown_source_tag_lists_the_ones_that_exist():
    with pytest.raises(WeightsError, match="IMAGENET1K_V1"):
        resolve("resnet50", "torchvision:IMAGENET9K")
    with pytest.raises(WeightsError, match="no timm weights"):
        resolve("alexnet", "timm")


# --- named sources: the torch hub cache, offline messages, checksums -------------------------

@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.delenv("CNNZOO_OFFLINE", raising=False)
    return home


def test_offline_named_source_without_cache_names_the_url_and_the_cache_path(
        torch_home, monkeypatch):
    monkeypatch.setenv("CNNZOO_OFFLINE", "1")
    src = resolve("resnet50", "torchvision")
    with pytest.raises(WeightsError) as err:
        create_model("resnet50", pretrained="torchvision")
    msg = str(err.value)
    assert src.url in msg
    assert str(torch_home / "hub" / "checkpoints" / src.file) in msg
    assert "\n" not in msg


def test_failed_download_names_the_url_and_the_cache_path(torch_home, monkeypatch):
    from urllib.error import URLError

    def no_network(*args, **kwargs):
        raise URLError("no route to host")
    monkeypatch.setattr("torch.hub.urlopen", no_network)
    src = resolve("resnet18", "timm")
    with pytest.raises(WeightsError) as err:
        create_model("resnet18", pretrained="timm")
    msg = str(err.value)
    assert "no route to host" in msg and src.url in msg and str(src.cache_path()) in msg
    assert not src.cache_path().exists()


def test_cached_named_source_loads_with_its_preprocessing(torch_home):
    src = resolve("resnet18", "torchvision")
    theirs = build_peer("torchvision", src.peer, 64)
    src.cache_path().parent.mkdir(parents=True)
    torch.save(theirs.state_dict(), src.cache_path())
    ours = create_model("resnet18", pretrained="torchvision").eval()
    x = torch.randn(2, 3, 64, 64)
    for got, want, tol in outputs_in_both_layouts(ours, theirs, x):
        assert (got - want).abs().max().item() <= tol
    cfg = ours.default_cfg
    assert (cfg.crop_pct, cfg.interpolation, cfg.mean) == (src.crop_pct, src.interpolation,
                                                           src.mean)
    assert cfg.extra["pretrained"]["url"] == src.url


def _serve_locally(monkeypatch, files):
    """Make torch.hub's downloader read https://example.test/<name> from local files."""
    from urllib.request import urlopen

    def fake_urlopen(req, *args, **kwargs):
        name = req.full_url.rsplit("/", 1)[-1]
        return urlopen(files[name].as_uri())
    monkeypatch.setattr("torch.hub.urlopen", fake_urlopen)


def test_url_download_is_checked_against_the_hash_in_its_name(torch_home, tmp_path,
                                                               monkeypatch):
    import hashlib
    theirs = build_peer("torchvision", "resnet18", 64)
    blob = tmp_path / "blob.pth"
    torch.save(theirs.state_dict(), blob)
    digest = hashlib.sha256(blob.read_bytes()).hexdigest()
    good, bad = f"r18-{digest[:8]}.pth", f"r18-{'0' * 8 if digest[0] != '0' else '1' * 8}.pth"
    _serve_locally(monkeypatch, {good: blob, bad: blob})

    with pytest.raises(WeightsError, match="does not match its checksum"):
        create_model("resnet18", pretrained=f"https://example.test/{bad}")
    cache = torch_home / "hub" / "checkpoints"
    assert not (cache / bad).exists() and not list(cache.glob("*.partial"))

    ours = create_model("resnet18", pretrained=f"https://example.test/{good}").eval()
    assert (cache / good).is_file()
    x = torch.randn(1, 3, 64, 64)
    for got, want, tol in outputs_in_both_layouts(ours, theirs, x):
        assert (got - want).abs().max().item() <= tol


def test_torchvision_densenet_files_in_their_pre_0_4_key_spelling_load():
    # torchvision's published DenseNet files say 'denselayer1.norm.1.weight', not 'norm1'.
    import re
    theirs = build_peer("torchvision", "densenet121", 64)
    old = {re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", k): v
           for k, v in theirs.state_dict().items()}
    assert any(".norm.1." in k for k in old)
    ours = build_ours_from("densenet121", old)
    x = torch.randn(1, 3, 64, 64)
    for got, want, tol in outputs_in_both_layouts(ours, theirs, x):
        assert (got - want).abs().max().item() <= tol


def test_auxiliary_heads_are_imported_when_the_model_builds_them():
    theirs = build_peer("torchvision", "googlenet", 64)
    ours = build_ours_from("googlenet", theirs.state_dict(), aux_logits=True)
    mine, tv = ours.state_dict(), theirs.state_dict()
    assert torch.equal(mine["aux_heads.inception_4d.fc.weight"], tv["aux2.fc2.weight"])
    assert torch.equal(mine["aux_heads.inception_4a.convs.0.conv.weight"], tv["aux1.conv.conv.weight"])


def test_sources_table_is_what_the_generator_makes_from_the_installed_libraries():
    # sources.json is generated, never edited: after a change to PEERS, run
    # `python -m cnnzoo.weights._generate`.
    import json
    from pathlib import Path

    import cnnzoo.weights as weights
    from cnnzoo.weights._generate import imagenet_classes, sources_table
    here = Path(weights.__file__).parent
    assert json.loads((here / "sources.json").read_text()) == \
        json.loads(json.dumps(sources_table()))
    assert list(IMAGENET_CLASSES) == imagenet_classes()
