"""Reading and writing weights files safely.

Only two formats are read: safetensors (plain tensors, nothing to execute) and torch pickles
through ``torch.load(weights_only=True)``, whose unpickler refuses anything but tensors and
containers, so a malicious checkpoint cannot run code. Writes are atomic: a temporary file in
the same folder, fsync, then rename, so a crash never leaves a half-written file under the
real name.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from ..errors import WeightsError

PICKLE_SUFFIXES = {".pth", ".pt", ".bin", ".ckpt"}


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a weights-only torch pickle, on the CPU."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"weights file not found: {path}")
    if path.is_dir():
        raise WeightsError(f"expected a weights file, got a folder: {path}")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path), device="cpu")
        if path.suffix in PICKLE_SUFFIXES:
            obj = torch.load(path, map_location="cpu", weights_only=True)
            return _unwrap(obj, path)
    except (SafetensorError, RuntimeError, EOFError, ValueError, OSError) as exc:
        # weights_only's refusal of code is an UnpicklingError (a RuntimeError subclass in
        # recent torch); truncated files surface as EOFError or RuntimeError.
        raise WeightsError(f"cannot read weights from {path}: {_first_line(exc)}") from None
    except Exception as exc:  # pickle.UnpicklingError and friends
        raise WeightsError(f"refused to load {path}: {_first_line(exc)}") from None
    raise WeightsError(f"unknown weights format {path.suffix!r} for {path}: "
                       f"use .safetensors or a torch file (.pth/.pt)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _unwrap(obj, path: Path) -> dict[str, torch.Tensor]:
    # Training scripts often save {'state_dict': ...} or {'model': ...} around the weights.
    for key in ("state_dict", "model", "model_state_dict", "module"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(tmp_path)`` then move the result onto ``path`` in one rename."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OSError(exc.errno, f"{exc.strerror or exc}; {path} was not written",
                      str(path)) from None
    os.close(fd)
    try:
        write(tmp)
        # mkstemp creates the file private (0600); the result gets the mode any new file would.
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno is not None:
            # Name the file the user asked for, not our temporary one; nothing was left behind.
            raise OSError(exc.errno, f"{exc.strerror or exc}; {path} was not written",
                          str(path)) from None
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_state_dict(state: Mapping[str, torch.Tensor], path: str | os.PathLike,
                    metadata: dict[str, str] | None = None) -> None:
    """Write tensors as safetensors, atomically (shared storage is copied apart first)."""
    tensors = {k: v.detach().contiguous().clone() if _shares_storage(v, state) else
               v.detach().contiguous() for k, v in state.items()}
    # Serialised here and written by Python, whose writes raise on a full disk (ENOSPC) rather
    # than leave a short file behind an error nobody sees.
    data = save(tensors, metadata=metadata)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def _shares_storage(t: torch.Tensor, state: Mapping[str, torch.Tensor]) -> bool:
    ptr = t.untyped_storage().data_ptr()
    return sum(1 for v in state.values() if v.untyped_storage().data_ptr() == ptr) > 1
