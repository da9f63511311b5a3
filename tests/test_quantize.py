"""int8: ``cnnzoo.quantize`` on every family, its two backends and the race between them, and the
`bench`, `eval` and `export` options. Every path runs on whatever CPU runs the suite; speed is
never asserted (bench/peers.py --int8 measures it)."""
from __future__ import annotations

import importlib
import json

import onnx
import pytest
import torch
from conftest import randomise_bn, small_input, smallest_per_family
from datagen import make_image_folder

import cnnzoo
from cnnzoo.cli import main
from cnnzoo.perf.fold import find_conv_bn_pairs
from cnnzoo.registry import create_model

q = importlib.import_module("cnnzoo.perf.quantize")  # the module; cnnzoo.perf.quantize is the call

FAMILIES = smallest_per_family()


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b).min())


def _calibrated(name: str, batch: int = 8):
    torch.manual_seed(0)
    model = randomise_bn(create_model(name))
    x = small_input(name, batch)
    with torch.no_grad():
        return model, x, model(x)


# PT2E's quantizer cannot annotate a conv module called twice in one forward (CBAM's shared
# channel MLP: "Input partition has more than one output node"); ONNX Runtime quantizes it.
ORT_ONLY = {"CBAM"}
# Through ONNX Runtime too, for the suite's time: PT2E's convert takes DenseNet-121 40 s on two
# cores (Inception's concatenations cover that path), and the deformable conv runs in float.
ORT_TESTED = ORT_ONLY | {"DenseNet", "DCN"}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_quantizes_and_agrees_with_float(family):
    """One model of each family, int8: the logits of the calibrated batch point the way fp32's
    do. PyTorch's int8 graph (PT2E, each quantize/dequantize pair computed in float) where it
    can be built, else ONNX Runtime's."""
    model, x, ref = _calibrated(FAMILIES[family])
    pairs = len(find_conv_bn_pairs(model))
    bns = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    if family in ORT_TESTED:
        if family in ORT_ONLY:
            with pytest.raises(q._onnxrt.BackendUnavailable, match="more than one output node"):
                cnnzoo.quantize(model, x, backend="reference")
        fast = cnnzoo.quantize(model, x, backend="onnxruntime")
        ops = [n.op_type for n in onnx.load_from_string(fast.onnx_bytes).graph.node]
        assert ops.count("BatchNormalization") == bns - pairs
        assert "QuantizeLinear" in ops
    else:
        fast = cnnzoo.quantize(model, x, backend="reference")
        targets = [str(n.target) for n in fast.graph.graph.nodes if n.op == "call_function"]
        # Folded first, every BN that follows a conv; a pre-activation one (DenseNet) stays.
        assert sum("batch_norm" in t for t in targets) == bns - pairs
        assert any("dequantize_per_channel" in t for t in targets)  # int8 weights per channel
    assert fast.report.folded == pairs
    assert _cosine(fast(x), ref) >= 0.99


def test_onnxruntime_int8_is_a_qdq_file_that_agrees_with_float():
    model, x, ref = _calibrated("resnet18")
    fast = cnnzoo.quantize(model, x, backend="onnxruntime")
    assert _cosine(fast(x), ref) >= 0.99
    ops = {n.op_type for n in onnx.load_from_string(fast.onnx_bytes).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    assert "BatchNormalization" not in ops
    assert fast.report.backend == "onnxruntime" and not fast.report.float_ops
    # Per-channel weights: a scale per output channel of the first conv.
    inits = {i.name: i for i in onnx.load_from_string(fast.onnx_bytes).graph.initializer}
    assert inits["stem.conv.weight_scale"].dims == [64]


def test_ops_without_an_int8_kernel_stay_float_and_are_reported():
    model, x, ref = _calibrated("alexnet_original", 4)
    fast = cnnzoo.quantize(model, x, backend="reference")
    assert fast.report.float_ops == {"LocalResponseNorm (no int8 kernel)": 2}
    assert "2 LocalResponseNorm (no int8 kernel) in float" in fast.report.describe()
    assert _cosine(fast(x), ref) >= 0.99


def test_auto_races_the_backends_and_keeps_the_faster(monkeypatch):
    model, x, _ = _calibrated("lenet5", 8)
    # The race's timings, made up: ONNX Runtime 5 ms a step, inductor 1 ms.
    def fake_race(runs, rounds, **kw):
        return {"onnxruntime": [0.005] * rounds, "inductor": [0.001] * rounds}
    monkeypatch.setattr(q, "race", fake_race)
    built = []

    def fake_build(name, *args):
        built.append(name)
        return (lambda t: torch.zeros(len(t), 10)), None, None
    monkeypatch.setattr(q, "_build", fake_build)
    monkeypatch.setattr(q, "graph_float_ops", lambda graph: {})
    fast = cnnzoo.quantize(model, x)
    assert built == ["onnxruntime", "inductor"]
    assert fast.report.backend == "inductor"
    assert fast.report.timings_ms == {"onnxruntime": 5.0, "inductor": 1.0}
    assert "raced: onnxruntime 5.0 ms, inductor 1.0 ms" in fast.report.describe()


def test_a_backend_that_cannot_be_built_is_left_out_with_its_reason(monkeypatch):
    model, x, ref = _calibrated("lenet5", 8)

    def no_torchao():
        raise q._onnxrt.BackendUnavailable("the inductor int8 backend needs `pip install torchao`")
    monkeypatch.setattr(q, "_torchao", no_torchao)
    fast = cnnzoo.quantize(model, x)
    assert fast.report.backend == "onnxruntime"
    assert "pip install torchao" in fast.report.failed["inductor"]
    assert _cosine(fast(x), ref) >= 0.99
    with pytest.raises(q._onnxrt.BackendUnavailable, match="cannot quantize the model"):
        cnnzoo.quantize(model, x, backend="inductor")


def test_inductor_int8_compiles_and_agrees_with_float():
    """The compiled PT2E path, end to end, on the smallest model (compilation is the cost).
    In RGB: inductor's int8 conv lowering (torch 2.14) fails on a one-channel input, where
    ``auto`` then keeps ONNX Runtime and says why in ``report.failed``."""
    torch.manual_seed(0)
    model = create_model("lenet5", in_chans=3).eval()
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
    fast = cnnzoo.quantize(model, x, backend="inductor")
    assert fast.report.backend == "inductor" and fast.report.build_s["inductor"] > 0
    assert _cosine(fast(x), ref) >= 0.99
    assert _cosine(fast(x[:3]), ref[:3]) >= 0.99  # another batch size compiles again


def test_calibration_takes_tensors_loaders_and_a_limit():
    x = torch.randn(10, 1, 32, 32)
    loader = [(x[:4], torch.zeros(4)), (x[4:], torch.zeros(6))]
    assert [len(b) for b in q.calibration_batches(loader, limit=7)] == [4, 3]
    assert [len(b) for b in q.calibration_batches(x, batch_size=4)] == [4, 4, 2]
    with pytest.raises(ValueError, match="no images"):
        q.calibration_batches([])
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        q.calibration_batches([torch.zeros(3, 3)])


# -- the command line ------------------------------------------------------------------------
def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_bench_int8_times_the_quantized_model(tmp_path, capsys):
    out = tmp_path / "b.csv"
    assert main(["bench", "lenet5", "--int8", "onnxruntime", "--device", "cpu", "--steps", "2",
                 "--warmup", "0", "-o", str(out)]) == 0
    text = out.read_text()
    assert "int8 onnxruntime" in text and "int8: 0 BN folded, int8 (onnxruntime)" in text
    capsys.readouterr()
    assert main(["bench", "lenet5", "--int8", "--amp", "--device", "cpu"]) == 2
    assert "--int8" in _one_line_error(capsys)


def test_eval_int8_calibrates_on_training_images_and_scores_the_held_out_set(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "lenet5", "--data", "digits", "-o", str(run), "--epochs", "2",
                 "-b", "32", "--no-augment"]) == 0
    capsys.readouterr()
    scores = {}
    for flags in ([], ["--int8", "--calib", "64", "--int8-backend", "onnxruntime"]):
        assert main(["eval", "lenet5", "--weights", str(run), "-o", str(tmp_path / "cm.png"),
                     "--force", "--json", *flags]) == 0
        scores[bool(flags)] = json.loads(capsys.readouterr().out)
    config = json.loads((run / "config.json").read_text())
    assert scores[True]["images"] == scores[False]["images"] == config["val_images"]
    assert "calibrated on 64 images" in scores[True]["optimized"] and scores[True]["int8"]
    assert abs(scores[True]["top1"] - scores[False]["top1"]) <= 3.0
    assert main(["eval", "lenet5", "--weights", str(run), "--int8", "--optimize"]) == 2
    assert "--int8" in _one_line_error(capsys)


def test_calibration_images_are_never_the_held_out_ones():
    from cnnzoo.cli._int8 import calibration_loader
    from cnnzoo.data import load_source
    source = load_source("digits")
    held = list(range(0, len(source.train), 2))
    loader = calibration_loader(source, create_model("lenet5").default_cfg, 50, held_out=held)
    chosen = loader.loader.dataset.indices if hasattr(loader, "loader") else None
    chosen = chosen or loader.dataset.indices
    assert len(chosen) == 50 and not set(chosen) & set(held)


def test_export_int8_writes_a_qdq_file_that_onnxruntime_runs(tmp_path, capsys):
    data = make_image_folder(tmp_path / "imgs", per_class=8, size=40)
    out = tmp_path / "m.onnx"
    assert main(["export", "resnet18", "--img-size", "64", "--int8", "--calib", str(data),
                 "--calib-images", "16", "-o", str(out)]) == 0
    said = capsys.readouterr().out
    assert "int8 QDQ" in said and "top-1 agreement" in said
    graph = onnx.load(str(out)).graph
    assert sum(n.op_type == "QuantizeLinear" for n in graph.node) > 10
    from cnnzoo.perf.onnxrt import OrtRunner
    assert OrtRunner(str(out))(torch.randn(3, 3, 64, 64)).shape == (3, 1000)
    # Not replaced without --force; no --calib is one line.
    assert main(["export", "resnet18", "--int8", "--calib", str(data), "-o", str(out)]) == 2
    assert "--force" in _one_line_error(capsys)
    assert main(["export", "resnet18", "--int8", "-o", str(tmp_path / "n.onnx")]) == 2
    assert "--calib" in _one_line_error(capsys)
