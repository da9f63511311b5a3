"""`draw`: block diagrams from the traced graph, for every family, with Graphviz."""
from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET

import pytest
import torch
from torch import nn

from cnnzoo import create_model, default_cfg, list_models, model_card
from cnnzoo.cli import main
from cnnzoo.inspect import draw
from cnnzoo.inspect.draw import build_view, to_dot
from cnnzoo.inspect.graph import trace
from cnnzoo.layers.conv_norm_act import ConvNormAct

# One model per family, whatever families are registered when the suite runs.
ONE_PER_FAMILY = list({model_card(n).family: n for n in reversed(list_models())}.values())


def meta_graph(name: str):
    with torch.device("meta"):
        return trace(create_model(name))


def preds(view, box_id):
    return [a for a, b in view.edges if b == box_id]


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_draw_writes_a_valid_svg_for_each_family(name, tmp_path, capsys):
    out = tmp_path / f"{name}.svg"
    assert main(["draw", name, "-o", str(out), "--depth", "auto"]) == 0
    root = ET.parse(out).getroot()
    assert root.tag.endswith("svg")
    texts = " ".join(t.text or "" for t in root.iter() if t.tag.endswith("text"))
    c, h, w = default_cfg(name).input_size
    assert f"{c}×{h}×{w}" in texts          # the input box shows the input shape
    assert "output" in texts
    assert str(out) in capsys.readouterr().out


# One test per model, so that pytest-xdist spreads them.
@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_traces_into_a_connected_diagram(name):
    view = build_view(meta_graph(name))
    ios = {b.title: b.id for b in view.boxes.values() if b.kind == "io"}
    assert set(ios) == {"input", "output"}, name
    # every box but the input is fed by something: the data flow is connected
    unfed = set(view.boxes) - {ios["input"]} - {b for _, b in view.edges}
    assert not unfed, (name, sorted(unfed)[:3])


def test_residual_skip_is_an_arrow_around_the_block_into_the_addition():
    view = build_view(meta_graph("resnet18"))
    adds = [b for b in view.boxes.values() if b.title == "+"]
    assert len(adds) == 8  # two BasicBlocks in each of four stages
    first = adds[0]
    # The identity skip of the first block: the stem's output goes straight to its '+'.
    assert set(preds(view, first.id)) == {"stages_0_blocks_0_conv2", "stem"}
    # Where the shape changes the skip goes through the projection (downsample) instead.
    assert any(p.endswith("downsample") for p in preds(view, adds[2].id))


def test_folded_resnet_shows_each_stage_as_blocks_times_its_depth():
    with torch.device("meta"):
        model = create_model("resnet50")
    view = build_view(trace(model), depth=4)
    runs = [b for b in view.boxes.values() if b.kind == "group"]
    assert [b.count for b in runs] == [len(s.blocks) for s in model.stages]
    assert all(b.cls == "Bottleneck" for b in runs)
    assert runs[0].outline.startswith("1×1, 64 → 3×3, 64 → 1×1, 256")
    assert sum(b.params for b in runs) == sum(p.numel() for p in model.stages.parameters())


class Towers(nn.Module):
    """An Inception-style module: four parallel towers concatenated."""

    def __init__(self, c=8):
        super().__init__()
        self.branch1 = ConvNormAct(c, 4, 1)
        self.branch2 = nn.Sequential(ConvNormAct(c, 4, 1), ConvNormAct(4, 4, 3))
        self.branch3 = nn.Sequential(ConvNormAct(c, 2, 1), ConvNormAct(2, 4, 5))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), ConvNormAct(c, 4, 1))

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class DenseBlock(nn.Module):
    def __init__(self, c=8, growth=4, n=3):
        super().__init__()
        self.layers = nn.ModuleList(ConvNormAct(c + i * growth, growth, 3) for i in range(n))

    def forward(self, x):
        feats = [x]
        for layer in self.layers:
            feats.append(layer(torch.cat(feats, 1)))
        return torch.cat(feats, 1)


def _positions(source: str) -> dict[str, tuple[float, float]]:
    plain = subprocess.run(["dot", "-Tplain"], input=source, text=True, capture_output=True,
                           check=True).stdout
    return {ln.split()[1].strip('"'): (float(ln.split()[2]), float(ln.split()[3]))
            for ln in plain.splitlines() if ln.startswith("node ")}


def test_inception_towers_are_drawn_side_by_side_into_one_concat():
    net = nn.Sequential(ConvNormAct(3, 8, 3), Towers(8))
    view = build_view(trace(net, (3, 16, 16)))
    concat = next(b for b in view.boxes.values() if b.title == "concat")
    assert len(preds(view, concat.id)) == 4
    heads = [f"_1_branch{i}" for i in (1, 2, 3, 4)]
    heads = [h if h in view.boxes else h + "_0" for h in heads]  # a tower's first layer
    pos = _positions(to_dot(view))
    assert len({pos[h][1] for h in heads}) == 1      # the towers start on one rank ...
    assert len({pos[h][0] for h in heads}) == 4      # ... side by side
    assert all(pos[h][1] < pos["_0"][1] for h in heads)  # below the stem that feeds them all


def test_dense_block_concatenates_every_earlier_output():
    view = build_view(trace(DenseBlock(), (8, 8, 8)))
    cats = [b.id for b in view.boxes.values() if b.title == "concat"]
    assert len(cats) == 4
    for i in range(3):  # layer i's output reaches every later concatenation
        assert all(f"layers_{i}" in preds(view, c) for c in cats[i + 1:])
    assert preds(view, "output") == [cats[-1]]


def test_without_graphviz_draw_writes_dot_source_and_says_how_to_render(tmp_path, monkeypatch,
                                                                         capsys):
    monkeypatch.setattr(draw.shutil, "which", lambda _name: None)
    target = tmp_path / "resnet18.png"
    assert main(["draw", "resnet18", "-o", str(target)]) == 1
    assert not target.exists()
    source = (tmp_path / "resnet18.dot").read_text()
    assert source.startswith("digraph") and '"stem" -> ' in source
    err = capsys.readouterr().err
    assert "Graphviz" in err and "resnet18.dot" in err


def test_draw_refuses_to_overwrite_and_rejects_unknown_formats(tmp_path, capsys):
    target = tmp_path / "a.svg"
    target.write_text("mine")
    assert main(["draw", "lenet5", "-o", str(target)]) == 2
    assert target.read_text() == "mine"
    assert main(["draw", "lenet5", "-o", str(tmp_path / "a.gif")]) == 2
    assert main(["draw", "lenet5", "-o", str(target), "--force"]) == 0
    assert ET.parse(target).getroot().tag.endswith("svg")
    assert "exists" in capsys.readouterr().err


def test_norms_activations_and_dropout_join_the_layer_before_them():
    view = build_view(meta_graph("vgg16"), depth=2)
    head = {b.title: b.lines[0] for b in view.boxes.values() if b.clusters == ("head",)}
    assert head["fc1"] == "fc 4096 · ReLU · dropout 0.5"
    assert "act1" not in head and "drop1" not in head
    # After a '+' the activation keeps its own box: it is not part of any one branch.
    resnet = build_view(meta_graph("resnet18"))
    assert resnet.boxes["stages_0_blocks_0_act"].lines[0] == "ReLU"
