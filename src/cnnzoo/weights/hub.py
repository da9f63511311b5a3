"""Saved models on the Hugging Face Hub, through ``huggingface_hub`` and its cache.

``push_to_hub`` uploads the folder ``save_pretrained`` writes; ``download`` fetches one into
huggingface_hub's own cache (``HF_HUB_CACHE``, ``~/.cache/huggingface/hub`` by default), so a
model downloaded once loads offline later, and with ``HF_HUB_OFFLINE=1`` nothing is fetched.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from torch import nn

from ..errors import WeightsError
from .saved import CONFIG, WEIGHTS, save_pretrained

PREFIX = "hf-hub:"


def parse(spec: str) -> tuple[str, str | None]:
    """``'hf-hub:ORG/NAME@REV'`` -> ``('ORG/NAME', 'REV')``."""
    repo, _, revision = spec.removeprefix(PREFIX).partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise WeightsError(f"{spec!r} is no Hub repository: write hf-hub:ORG/NAME[@REVISION]")
    return repo, revision or None


def offline() -> bool:
    # huggingface_hub reads HF_HUB_OFFLINE once, when imported; a later setting counts too.
    from huggingface_hub import constants
    return constants.HF_HUB_OFFLINE or \
        os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def download(spec: str) -> Path:
    """The local folder (in the Hub cache) holding a saved model's config.json and weights."""
    import huggingface_hub
    from huggingface_hub import errors

    repo, revision = parse(spec)
    is_offline = offline()
    where = f"hf-hub:{repo}{'@' + revision if revision else ''}"
    try:
        files = [huggingface_hub.hf_hub_download(repo, name, revision=revision,
                                                 local_files_only=is_offline)
                 for name in (CONFIG, WEIGHTS)]
    except errors.LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if is_offline else "the Hub cannot be reached"
        raise WeightsError(f"{where} is not in the Hugging Face cache and {why}: download it "
                           f"once online (huggingface-cli download {repo})") from None
    except errors.RevisionNotFoundError:
        raise WeightsError(f"{where}: the repository has no revision {revision!r}") from None
    except errors.RepositoryNotFoundError:
        raise WeightsError(f"{where}: no such repository on the Hub (or it is private: log "
                           f"in with `hf auth login`)") from None
    except errors.EntryNotFoundError:
        raise WeightsError(f"{where} holds no {CONFIG} and {WEIGHTS}: not a saved cnnzoo "
                           f"model") from None
    except (errors.HfHubHTTPError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"{where} could not be fetched: {first}") from None
    return Path(files[0]).parent


def push_to_hub(model: nn.Module, repo_id: str, classes=None, *, private: bool | None = None,
                token: str | None = None, revision: str | None = None,
                commit_message: str = "Upload cnnzoo model"):
    """Upload ``model`` as a saved folder (config.json, model.safetensors, a short README) to
    the Hub repository ``repo_id`` ('ORG/NAME'), creating it if needed; returns the commit."""
    import huggingface_hub

    parse(repo_id)
    api = huggingface_hub.HfApi(token=token)
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_pretrained(model, Path(tmp) / "model", classes)
        (folder / "README.md").write_text(_card(model, repo_id))
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        return api.upload_folder(repo_id=repo_id, folder_path=str(folder), revision=revision,
                                 commit_message=commit_message, repo_type="model")


def _card(model: nn.Module, repo_id: str) -> str:
    name = model.model_name
    card = getattr(model, "card", None)
    paper = f"\n{card.paper} ({card.year}), {card.url or ''}\n" if card else ""
    return (f"---\nlibrary_name: cnnzoo\ntags:\n- image-classification\n- cnnzoo\n---\n\n"
            f"# {repo_id}\n\nA cnnzoo `{name}`.\n{paper}\n```python\nimport cnnzoo\n"
            f"model = cnnzoo.create_model(\"hf-hub:{repo_id}\")\n```\n")
