"""Training state as safetensors: tensors in the file, everything else as JSON in its metadata.

A checkpoint is two files, each written atomically (``weights.io.save_state_dict``): the model's
weights (``last.safetensors``, loadable by anyone) and the state to resume from
(``last.state.safetensors``: optimizer, scheduler, epoch and step, RNG states, EMA weights, the
metric history). Both carry the same random ``checkpoint_id``; the state is written first, so a
crash between the two writes leaves a pair whose ids differ, which resume refuses rather than
mixing weights of one epoch with optimizer moments of another. So that a crash (``kill -9``, power)
at any instant still leaves a pair that matches, the previous state is first renamed
``last.prev.state.safetensors`` and only removed once the new pair is complete; loading falls
back to it when the newest state has no weights yet. No pickle is involved, so a checkpoint
cannot run code when loaded.
"""
from __future__ import annotations

import json
import os
import random
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open

from ..errors import WeightsError
from ..weights.io import load_state_dict, save_state_dict


def state_path(run_dir: Path, name: str) -> Path:
    return run_dir / f"{name}.state.safetensors"


def prev_state_path(run_dir: Path, name: str) -> Path:
    return run_dir / f"{name}.prev.state.safetensors"


def _flatten_optimizer(sd: dict, tensors: dict[str, torch.Tensor]) -> dict:
    """Optimizer state dict -> JSON-able skeleton; its tensors go into ``tensors``."""
    state = {}
    for pid, slots in sd["state"].items():
        state[str(pid)] = {}
        for key, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{pid}.{key}"] = value
                state[str(pid)][key] = {"tensor": f"optim.{pid}.{key}"}
            else:
                state[str(pid)][key] = value
    return {"state": state, "param_groups": sd["param_groups"]}


def _unflatten_optimizer(skeleton: dict, tensors: dict[str, torch.Tensor]) -> dict:
    state = {}
    for pid, slots in skeleton["state"].items():
        state[int(pid)] = {k: tensors[v["tensor"]] if isinstance(v, dict) and "tensor" in v else v
                           for k, v in slots.items()}
    return {"state": state, "param_groups": skeleton["param_groups"]}


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    np_state = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np_state[1].astype(np.int64))
    meta = {"numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
            "python": _jsonable(random.getstate())}
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    kind, pos, has_gauss, gauss = meta["numpy"]
    np.random.set_state((kind, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss,
                         gauss))
    random.setstate(_tupled(meta["python"]))


def _jsonable(obj):
    return [_jsonable(o) for o in obj] if isinstance(obj, (tuple, list)) else obj


def _tupled(obj):
    return tuple(_tupled(o) for o in obj) if isinstance(obj, list) else obj


def save_checkpoint(run_dir: Path, name: str, *, model_state: dict[str, torch.Tensor],
                    optimizer: torch.optim.Optimizer, scheduler, scaler, ema_state,
                    info: dict[str, Any]) -> None:
    """Write ``<name>.state.safetensors`` then ``<name>.safetensors`` (see the module note)."""
    tensors: dict[str, torch.Tensor] = {}
    rng_tensors, rng_meta = rng_state()
    tensors.update(rng_tensors)
    if ema_state is not None:
        tensors.update({f"ema.{k}": v for k, v in ema_state.items()})
    ckpt_id = uuid.uuid4().hex
    meta = {
        "checkpoint_id": ckpt_id,
        "optimizer": _flatten_optimizer(optimizer.state_dict(), tensors),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "rng": rng_meta,
        "info": info,
    }
    tensors = {k: v.detach().cpu() for k, v in tensors.items()}
    state, prev = state_path(run_dir, name), prev_state_path(run_dir, name)
    if state.exists() and (run_dir / f"{name}.safetensors").exists():
        os.replace(state, prev)  # the pair (weights, prev) stays whole until the new one is
    save_state_dict(tensors, state, metadata={"cnnzoo_state": json.dumps(meta)})
    save_weights(run_dir / f"{name}.safetensors", model_state,
                 {"checkpoint_id": ckpt_id, "epoch": str(info.get("epoch")),
                  "step": str(info.get("step", 0))})
    prev.unlink(missing_ok=True)


def save_weights(path: Path, model_state: dict[str, torch.Tensor], metadata: dict[str, str]):
    save_state_dict({k: v.detach().cpu() for k, v in model_state.items()}, path,
                    metadata={"format": "pt", **metadata})


def read_metadata(path: Path) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except Exception as exc:  # SafetensorError, or a header that is not JSON
        raise WeightsError(f"cannot read {path}: {str(exc).splitlines()[0] if str(exc) else exc}"
                           ) from None


def _state_meta(path: Path) -> dict:
    try:
        return json.loads(read_metadata(path).get("cnnzoo_state", "{}"))
    except json.JSONDecodeError:
        raise WeightsError(f"{path} holds no readable training state") from None


def has_checkpoint(run_dir: Path, name: str = "last") -> bool:
    """Whether a checkpoint was ever completed (its weights file exists: they are written last)."""
    return (run_dir / f"{name}.safetensors").exists()


def load_checkpoint(run_dir: Path, name: str = "last") -> tuple[dict, dict, dict]:
    """(model weights, state tensors, state metadata) of a checkpoint, consistency checked."""
    weights_path = run_dir / f"{name}.safetensors"
    wanted = read_metadata(weights_path).get("checkpoint_id")
    for path in (state_path(run_dir, name), prev_state_path(run_dir, name)):
        if path.exists():
            meta = _state_meta(path)
            if meta.get("checkpoint_id") == wanted:
                return load_state_dict(weights_path), load_state_dict(path), meta
    raise WeightsError(f"{weights_path.name} and {state_path(run_dir, name).name} in {run_dir} "
                       f"come from different saves (interrupted while writing?); cannot resume "
                       f"exactly")


def restore_optimizer(optimizer, meta: dict, tensors: dict[str, torch.Tensor]) -> None:
    optimizer.load_state_dict(_unflatten_optimizer(meta["optimizer"], tensors))
