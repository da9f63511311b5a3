"""Regenerate ``sources.json`` and ``imagenet_classes.txt`` from the installed torchvision and timm.

    PYTHONPATH=src python -m cnnzoo.weights._generate

Nothing in these files is typed by hand: URLs, checksums (the sha256 prefix torchvision puts in
its file names), preprocessing and class names are read from torchvision's weight enums and
timm's pretrained configs, for every peer in ``mapping.PEERS``. Run it again after adding peers.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from .mapping import PEERS
from .sources import HASH_IN_NAME

HERE = Path(__file__).parent


# torchvision builds these with ``transform_input=True`` whenever it loads their weights: the
# network itself re-normalises ImageNet-normalised input to (x - 0.5) / 0.5, the Inception
# convention the weights were trained with. Ours has no such step, so that normalisation is the
# preprocessing that travels with these weights.
_TRANSFORM_INPUT = {"googlenet", "inception_v3"}


def _torchvision(peer) -> list[dict]:
    from torchvision.models import get_model_weights
    enum = get_model_weights(peer.name)
    rows = []
    for w in enum:
        categories = w.meta.get("categories") or []
        if len(categories) != 1000:  # feature-only or other-dataset weights
            continue
        t = w.transforms()
        crop, resize = t.crop_size[0], t.resize_size[0]
        file = w.url.rsplit("/", 1)[-1]
        found = HASH_IN_NAME.search(file)
        mean, std = (list(t.mean), list(t.std)) if peer.name not in _TRANSFORM_INPUT else \
            ([0.5] * 3, [0.5] * 3)
        rows.append(dict(
            source="torchvision", tag=w.name, default=w == enum.DEFAULT, peer=peer.name,
            url=w.url, file=file, sha256_prefix=found.group(1) if found else None,
            input_size=[3, crop, crop], resize_size=resize, crop_pct=round(crop / resize, 4),
            interpolation=t.interpolation.value, mean=mean, std=std,
            top1=w.meta["_metrics"]["ImageNet-1K"]["acc@1"]))
    return rows


def _timm(peer) -> list[dict]:
    import timm
    cfg = timm.models.get_pretrained_cfg(peer.name)
    if cfg is None or cfg.num_classes != 1000:
        return []
    if cfg.hf_hub_id:
        # The Hugging Face copy is safetensors; its name carries no checksum (see sources.py).
        url = f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/model.safetensors"
        file, prefix = cfg.hf_hub_id.replace("/", "--") + ".safetensors", None
    elif cfg.url:
        url = cfg.url
        file = url.rsplit("/", 1)[-1]
        found = HASH_IN_NAME.search(file)
        prefix = found.group(1) if found else None
    else:  # timm has the architecture but publishes no weights for it
        return []
    size = cfg.input_size[-1]
    return [dict(
        source="timm", tag=cfg.tag, default=True, peer=peer.name, url=url, file=file,
        sha256_prefix=prefix, input_size=list(cfg.input_size),
        resize_size=int(math.floor(size / cfg.crop_pct)), crop_pct=cfg.crop_pct,
        interpolation=cfg.interpolation, mean=list(cfg.mean), std=list(cfg.std), top1=None)]


def sources_table() -> dict[str, list[dict]]:
    table: dict[str, list[dict]] = {}
    for peer in PEERS:
        rows = _torchvision(peer) if peer.source == "torchvision" else _timm(peer)
        if rows:
            table.setdefault(peer.ours, []).extend(rows)
    return dict(sorted(table.items()))


def imagenet_classes() -> list[str]:
    from torchvision.models import ResNet50_Weights
    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def main() -> None:
    # One file per line: the table reads (and diffs) as a table.
    blocks = [f" {json.dumps(name)}: [\n" + ",\n".join(f"  {json.dumps(r)}" for r in rows) + "\n ]"
              for name, rows in sources_table().items()]
    (HERE / "sources.json").write_text("{\n" + ",\n".join(blocks) + "\n}\n")
    classes = imagenet_classes()
    assert len(classes) == 1000
    (HERE / "imagenet_classes.txt").write_text("\n".join(classes) + "\n")


if __name__ == "__main__":
    main()
