"""Shared fixtures: the reference figures in ../shared and small helpers."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import cnnzoo  # noqa: F401 - before torch, as users import it: torch's allocator then uses huge pages
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
