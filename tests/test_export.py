"""ONNX export: one model of every registered family runs the same in onnxruntime, batch dynamic."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from cnnzoo import create_model, default_cfg, list_models, model_card
from cnnzoo.cli import main
from cnnzoo.export import DEFAULT_OPSET, ExportError, export_onnx
from cnnzoo.export.onnx import DEFORM_OPSET
from cnnzoo.inspect.counts import registered_param_count

from _peers import calibrate_bn


def _smallest_of_each_family() -> dict[str, str]:
    chosen: dict[str, str] = {}
    for name in list_models():
        family = model_card(name).family
        if family not in chosen or registered_param_count(name) < registered_param_count(
                chosen[family]):
            chosen[family] = name
    return chosen


ROOT = Path(__file__).resolve().parents[1]
FAMILIES = _smallest_of_each_family()


def _side(name: str, model) -> int:
    """A small input the export and the comparison are meaningful at.

    torch's exporter expresses adaptive pooling only when the output size divides the input, so
    the 7x7 pooling before VGG's dense layers needs the 224 input it was designed for. At the
    smallest input the Inception v3 line accepts (75) its last maps are 1x1, and BN statistics
    measured there are degenerate enough to magnify float noise past 1e-4; 64 px more gives
    3x3 maps.
    """
    cfg = default_cfg(name)
    fixed_pool = any(isinstance(m, torch.nn.AdaptiveAvgPool2d) and m.output_size not in (1, (1, 1))
                     for m in model.modules())
    if cfg.fixed_size or fixed_pool:
        return cfg.input_size[-1]
    return 64 if cfg.min_size <= 64 else cfg.min_size + 64


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_exports_with_dynamic_batch_and_matches_onnxruntime(family, tmp_path):
    name = FAMILIES[family]
    torch.manual_seed(0)
    model = create_model(name).eval()
    side, chans = _side(name, model), model.default_cfg.input_size[0]
    # BN statistics measured on data, as in a trained network: outputs of order 1, as in use.
    calibrate_bn(model, side, chans=chans, batch=16)
    path = tmp_path / f"{name}.onnx"
    result = export_onnx(model, path, input_size=(chans, side, side))
    assert result.max_abs_diff <= 1e-4

    proto = onnx.load(str(path), load_external_data=False)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == \
        [result.opset]
    assert result.opset in (DEFAULT_OPSET, DEFORM_OPSET)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["cnnzoo.model"] == name and meta["cnnzoo.opset"] == str(result.opset)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"

    # Checked here too, not only by export_onnx itself: a batch size the export never saw.
    x = torch.randn(3, chans, side, side, generator=torch.Generator().manual_seed(5))
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"input": x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-4


def test_failed_parity_check_leaves_no_file(tmp_path):
    path = tmp_path / "m.onnx"
    with pytest.raises(ExportError, match="onnxruntime disagrees"):
        export_onnx(create_model("lenet5"), path, atol=-1.0)  # no difference is below -1
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_to_replace_a_file_unless_forced(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_text("mine")
    with pytest.raises(ExportError, match="already exists"):
        export_onnx(create_model("lenet5"), path)
    assert path.read_text() == "mine"
    export_onnx(create_model("lenet5"), path, force=True)
    assert onnx.load(str(path)).graph.output[0].name == "logits"


def test_cli_export_refuses_overwrite_in_one_line_and_force_replaces(tmp_path, capsys):
    path = tmp_path / "lenet.onnx"
    path.write_text("mine")
    assert main(["export", "lenet5", "-o", str(path)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert path.read_text() == "mine"

    assert main(["export", "lenet5", "-o", str(path), "--force"]) == 0
    out = capsys.readouterr().out
    assert "opset" in out and "max abs diff" in out
    assert onnx.load(str(path)).graph.input[0].name == "input"


def test_cli_export_loads_weights_and_reports_a_new_classifier(tmp_path, capsys):
    weights = tmp_path / "lenet.pth"
    torch.save(create_model("lenet5").state_dict(), weights)
    out_path = tmp_path / "lenet3.onnx"
    assert main(["export", "lenet5", "--weights", str(weights), "--num-classes", "3",
                 "-o", str(out_path)]) == 0
    assert "re-initialised for 3 classes" in capsys.readouterr().out
    got = ort.InferenceSession(str(out_path), providers=["CPUExecutionProvider"]).run(
        None, {"input": np.zeros((5, 1, 32, 32), np.float32)})[0]
    assert got.shape == (5, 3)


def test_cli_export_unknown_model_ends_in_one_line_without_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "cnnzoo.cli", "export", "resnet9000",
                           "-o", "x.onnx"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "unknown model" in proc.stderr and "resnet" in proc.stderr
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("args, says", [
    (["export", "lenet5", "--weights", "missing.pth"], "not found"),
    (["export", "lenet5", "--img-size", "64"], "takes only 32x32"),
    (["export", "lenet5", "--weights", "timm"], "no timm weights"),
])
def test_cli_export_user_errors_end_in_one_line(tmp_path, capsys, args, says):
    out_path = tmp_path / "x.onnx"
    assert main([*args, "-o", str(out_path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and says in err
    assert not out_path.exists()
