"""`import cnnzoo` loads what every command needs and no more: every CLI call pays for it.

torchvision (which loads torch._dynamo) and the training loop with its data pipeline cost about
2.5 s together on a 2-core machine; they load when a deformable conv runs or a run trains.
"""
from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
import cnnzoo
cnnzoo.create_model("resnet18")
before = sorted(m for m in ("torchvision", "torch._dynamo", "cnnzoo.engine.trainer",
                            "cnnzoo.data") if m in sys.modules)
from cnnzoo.engine import TrainConfig, train
import torch
m = cnnzoo.create_model("dcn_resnet50").eval()
with torch.no_grad():
    m(torch.zeros(1, 3, 64, 64))
after = sorted(m for m in ("torchvision", "cnnzoo.engine.trainer") if m in sys.modules)
print(json.dumps([before, after]))
"""


def test_import_cnnzoo_leaves_torchvision_and_the_training_loop_unloaded_until_used():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         check=True).stdout
    before, after = json.loads(out.strip().splitlines()[-1])
    assert before == []
    assert after == ["cnnzoo.engine.trainer", "torchvision"]


def test_on_meta_builds_the_real_structure_with_initialisers_skipped():
    import torch

    import cnnzoo
    from cnnzoo.inspect.meta import on_meta

    real = cnnzoo.create_model("efficientnet_b0")
    with on_meta():
        meta = cnnzoo.create_model("efficientnet_b0")
    assert all(p.is_meta for p in meta.parameters())
    assert [(n, p.shape) for n, p in meta.named_parameters()] == [
        (n, p.shape) for n, p in real.named_parameters()]
    assert [type(m) for m in meta.modules()] == [type(m) for m in real.modules()]
    assert torch.device("meta") != torch.empty(1).device  # the device context ended with it
