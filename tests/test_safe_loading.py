"""A weights file can be hostile: loading one must never run code, and bad files fail in one line."""
from __future__ import annotations

import pickle

import pytest
import torch

from cnnzoo import create_model
from cnnzoo.errors import WeightsError
from cnnzoo.weights import resolve


class _Payload:
    """Unpickling this calls open(marker, 'w'), creating the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _malicious_state(marker) -> dict:
    return {"conv1.weight": torch.zeros(1), "evil": _Payload(marker)}


def test_the_payload_really_runs_when_unpickled_naively(tmp_path):
    # The control: without weights_only the file does what an attacker wants.
    marker, path = tmp_path / "pwned", tmp_path / "evil.pth"
    torch.save(_malicious_state(marker), path)
    assert not marker.exists()
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
@pytest.mark.parametrize("suffix", [".pth", ".pt", ".bin"])
def test_malicious_pickle_is_refused_without_running(tmp_path, writer, suffix):
    marker, path = tmp_path / "pwned", tmp_path / f"evil{suffix}"
    if writer == "torch.save":
        torch.save(_malicious_state(marker), path)
    else:  # the pre-1.6 plain-pickle format
        with open(path, "wb") as f:
            pickle.dump(_malicious_state(marker), f, protocol=2)
    with pytest.raises(WeightsError) as err:
        create_model("resnet18", pretrained=str(path))
    assert not marker.exists()
    assert "\n" not in str(err.value)


def test_malicious_file_in_the_download_cache_is_refused(tmp_path, monkeypatch):
    # A poisoned cache (someone else's download, a shared folder) gets the same safe loader.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    src = resolve("resnet18", "torchvision")
    src.cache_path().parent.mkdir(parents=True)
    marker = tmp_path / "pwned"
    torch.save(_malicious_state(marker), src.cache_path())
    with pytest.raises(WeightsError):
        create_model("resnet18", pretrained="torchvision")
    assert not marker.exists()


def test_truncated_file_fails_in_one_line(tmp_path):
    path = tmp_path / "cut.pth"
    torch.save(create_model("lenet5").state_dict(), path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(WeightsError) as err:
        create_model("lenet5", pretrained=str(path))
    assert "\n" not in str(err.value) and "cut.pth" in str(err.value)


def test_a_file_that_is_not_a_state_dict_is_refused(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(WeightsError, match="state dict"):
        create_model("lenet5", pretrained=str(path))


def test_unknown_format_and_missing_file_are_user_errors(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        create_model("lenet5", pretrained=str(tmp_path / "nope.safetensors"))
    other = tmp_path / "w.npz"
    other.write_bytes(b"\0")
    with pytest.raises(WeightsError, match="unknown weights format"):
        create_model("lenet5", pretrained=str(other))
