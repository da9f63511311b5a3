"""`--module` draws one module of a model; `--set KEY=VALUE` builds a variant, for every command."""
from __future__ import annotations

import html
import json
import xml.etree.ElementTree as ET

import pytest

from cnnzoo.cli import main
from cnnzoo.cli._types import model_setting
from cnnzoo.inspect.counts import registered_macs, registered_param_count
from cnnzoo.inspect.variants import accepted_keys


def svg_texts(path) -> str:
    return " ".join(t.text or "" for t in ET.parse(path).getroot().iter() if t.tag.endswith("text"))


def totals(capsys, argv) -> dict:
    assert main(["summary", *argv, "--json", "--depth", "0"]) == 0
    return json.loads(capsys.readouterr().out)["totals"]


@pytest.mark.parametrize("text, pair", [
    ("attn=cbam", ("attn", "cbam")), ("attn='cbam'", ("attn", "cbam")),
    ("alpha=0.5", ("alpha", 0.5)), ("layers=(2, 2)", ("layers", (2, 2))),
    ("attn=None", ("attn", None)), ("zero_init_last=False", ("zero_init_last", False))])
def test_a_setting_is_a_python_literal_or_the_bare_word(text, pair):
    assert model_setting(text) == pair


@pytest.mark.parametrize("argv, twin", [
    (["resnet50", "--set", "attn=cbam"], "cbam_resnet50"),          # ResNet family
    (["mobilenet_v1", "--set", "alpha=0.5"], "mobilenet_v1_050"),   # MobileNet family
    (["resnet50", "--set", "cardinality=32", "--set", "base_width=4"], "resnext50_32x4d"),
])
def test_summary_of_a_variant_counts_the_registered_twin(capsys, argv, twin):
    t = totals(capsys, argv)
    assert t["params"] == registered_param_count(twin)
    assert t["macs"] == registered_macs(twin)


def test_summary_of_resnet50_with_cbam_prints_cbam_resnet50s_parameter_count(capsys):
    assert main(["summary", "resnet50", "--set", "attn=cbam", "--depth", "0"]) == 0
    assert f"params:       {registered_param_count('cbam_resnet50'):,} " in capsys.readouterr().out


def test_a_setting_changes_the_inception_family_too(capsys):
    plain = totals(capsys, ["inception_v3"])
    se = totals(capsys, ["inception_v3", "--set", "attn=se"])
    # SE gates add a few small 1x1 convs (se_inception_v3 rounds its reductions differently).
    assert plain["params"] < se["params"] < 1.1 * plain["params"]
    assert abs(se["params"] - registered_param_count("se_inception_v3")) < 1e4


@pytest.mark.parametrize("argv, words", [
    (["summary", "resnet50", "--set", "atn=cbam"], ["'atn'", "attn", "output_stride"]),
    (["summary", "resnet50", "--set", "attn=foo"], ["attn='foo'", "cbam", "accepts: "]),
    (["draw", "efficientnet_b0", "-o", "x.svg", "--set", "alpha=2"], ["'alpha'", "width_mult"]),
    (["summary", "densenet121", "--set", "output_stride=8"], ["'output_stride'", "bn_size"]),
    (["bench", "mobilenet_v1", "--set", "nope=1"], ["'nope'", "alpha"]),
    (["evolution", "-o", "atl", "--models", "resnet18", "--set", "nope=1"], ["'nope'", "attn"]),
])
def test_a_wrong_setting_is_one_line_naming_the_accepted_keys(capsys, tmp_path, monkeypatch,
                                                             argv, words):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cnnzoo: error:")
    for w in words:
        assert w in err
    assert not (tmp_path / "atl").exists() and not (tmp_path / "x.svg").exists()


def test_a_setting_that_is_not_key_equals_value_is_argparses_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["summary", "resnet50", "--set", "=3"])
    assert exit_.value.code == 2 and "KEY=VALUE" in capsys.readouterr().err


def test_accepted_keys_follow_the_builder_chain_but_leave_out_what_it_fixes():
    keys = accepted_keys("efficientnet_b0")
    assert {"width_mult", "drop_path_rate", "bn_eps", "num_classes"} <= set(keys)
    assert "block" not in accepted_keys("resnet50") and "attn" in accepted_keys("resnet50")


@pytest.mark.parametrize("model, path, words", [
    ("resnet50", "stages.0.blocks.0",
     ["Bottleneck", "64×56×56", "1×1 conv, 64", "3×3 conv, 64", "1×1 conv, 256", "256×56×56",
      "downsample", "+"]),
    ("efficientnet_b0", "stages.1.blocks.0",
     ["MBConv", "16×112×112", "96×112×112", "96×56×56", "4×1×1", "24×56×56", "×"]),
    ("googlenet", "blocks.inception_3a",
     ["192×28×28", "64×28×28", "128×28×28", "32×28×28", "256×28×28", "concat"]),
])
def test_draw_module_shows_one_block_at_full_detail_with_its_shapes(tmp_path, capsys, model,
                                                                   path, words):
    out = tmp_path / "b.svg"
    assert main(["draw", model, "--module", path, "-o", str(out)]) == 0
    texts = svg_texts(out)
    for w in words:
        assert w in texts, (w, texts[:400])
    assert "3×224×224" not in texts  # the model's input is not the block's


def test_draw_module_of_a_variant_draws_the_variant(tmp_path):
    out = tmp_path / "b.svg"
    assert main(["draw", "resnet50", "--set", "attn=cbam", "--module", "stages.0.blocks.0",
                 "-o", str(out)]) == 0
    texts = svg_texts(out)
    assert "attn='cbam'" in texts and "CBAM" in texts


@pytest.mark.parametrize("path, words", [("stages.0.blok", ["stages.0.blocks"]),
                                         ("nothing", ["stem", "stages", "head"])])
def test_draw_an_unknown_module_is_one_line_with_close_names(tmp_path, capsys, path, words):
    assert main(["draw", "resnet50", "--module", path, "-o", str(tmp_path / "b.svg")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and all(w in err for w in words)


def test_draw_a_module_that_takes_a_list_of_maps_is_one_line(tmp_path, capsys):
    # A DenseNet layer takes the list of every map before it: no single input to draw from.
    assert main(["draw", "densenet121", "--module", "stages.0.block.layer2",
                 "-o", str(tmp_path / "b.svg")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "stages.0.block.layer2" in err and "input" in err


def test_evolution_builds_every_model_as_the_variant(tmp_path, capsys):
    out = tmp_path / "atlas"
    assert main(["evolution", "-o", str(out), "--models", "resnet18", "--quick",
                 "--set", "attn=se"]) == 0
    atlas = json.loads((out / "atlas.json").read_text())
    assert atlas["models"][0]["params"] == registered_param_count("resnet18", attn="se")
    assert atlas["models"][0]["params"] > registered_param_count("resnet18")
    assert "built with attn='se'" in html.unescape((out / "index.html").read_text())


def test_bench_times_a_variant(tmp_path, capsys):
    out = tmp_path / "b.csv"
    assert main(["bench", "mobilenet_v1", "--set", "alpha=0.25", "--device", "cpu", "-b", "1",
                 "--warmup", "1", "--steps", "1", "--img-size", "64", "-o", str(out)]) == 0
    head, row = (line.split(",") for line in out.read_text().splitlines()[:2])
    params_m = float(row[head.index("param_count")])
    assert abs(params_m * 1e6 - registered_param_count("mobilenet_v1_025")) < 1e4
    assert params_m < 0.5 * registered_param_count("mobilenet_v1") / 1e6
