"""Shared fixtures: the reference figures in ../shared and small helpers."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CNNZOO_SHARED", ROOT.parent / "shared"))

# The tests never depend on thread scheduling; keeping torch to one thread per xdist worker
# stops two workers from fighting over the two cores.
torch.set_num_threads(1)


def read_reference(filename: str) -> list[list[str]]:
    path = SHARED / "reference" / filename
    if not path.exists():
        pytest.fail(f"reference file {path} is missing: ../shared must sit beside the repository")
    rows = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            rows.append(line.split("\t"))
    return rows


def reference_variant(ref_name: str) -> tuple[str, dict]:
    """'lenet5@28' -> ('lenet5', {'img_size': 28}); 'googlenet+aux' -> (..., {'aux_logits': True})."""
    if "@" in ref_name:
        name, size = ref_name.split("@")
        return name, {"img_size": int(size)}
    if ref_name.endswith("+aux"):
        return ref_name[:-4], {"aux_logits": True}
    return ref_name, {}


@pytest.fixture
def shared_dir() -> Path:
    return SHARED


def randomise_bn(model, seed: int = 0):
    """``model`` in eval mode with non-trivial BN statistics and affines.

    Fresh BNs are identities (mean 0, var 1, gamma 1 or 0): a comparison through them proves
    nothing about folding, layout or the order of layers.
    """
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) * 0.5 + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
    return model.eval()


def smallest_per_family() -> dict[str, str]:
    """family -> its model with the fewest parameters: one cheap model of every family."""
    from cnnzoo import list_models, model_card
    from cnnzoo.inspect.counts import registered_param_count
    best: dict[str, tuple[int, str]] = {}
    for name in list_models():
        fam, size = model_card(name).family, registered_param_count(name)
        if fam not in best or size < best[fam][0]:
            best[fam] = (size, name)
    return {fam: name for fam, (_, name) in best.items()}


def small_input(name: str, batch: int = 2):
    """A seeded batch at the model's fixed size, or at 64 (its minimum if larger) otherwise."""
    from cnnzoo import default_cfg
    cfg = default_cfg(name)
    c, h, w = cfg.input_size
    if not cfg.fixed_size:
        h = w = max(cfg.min_size, 64)  # small, to keep the suite fast
    return torch.randn(batch, c, h, w, generator=torch.Generator().manual_seed(1))
