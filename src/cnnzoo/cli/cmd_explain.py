"""`cnnzoo explain MODEL IMAGE --weights W -o DIR`: feature maps and a Grad-CAM heat map."""
from __future__ import annotations

import argparse
import json
import os
import re
import sys

from ..errors import CnnzooError
from ..inspect.explain import (feature_maps, grad_cam, load_image, resize_map, save_grid,
                               save_overlay)
from ..registry import is_model
from ..resolve import load
from .cmd_predict import MODEL_HELP

NAME = "explain"
HELP = "feature maps of the stages and a Grad-CAM heat map of an image"
ORDER = 60


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("image", help="an image file (png, jpg ...)")
    p.add_argument("--weights", metavar="W",
                   help="for a registered MODEL: a run folder, a saved model or a .safetensors/"
                        ".pth/.h5 file; without it the network is untrained")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for the pictures")
    p.add_argument("--stages", metavar="I,J", default=None,
                   help="feature_info indices to show as grids (default: all stages)")
    p.add_argument("--class", dest="class_idx", type=int, default=None, metavar="K",
                   help="class index to explain (default: the top prediction)")
    p.add_argument("--layer", default=None,
                   help="module for Grad-CAM (default: the deepest feature map)")
    p.add_argument("--force", action="store_true", help="overwrite pictures already in DIR")


def _model(name: str, weights: str | None):
    if weights is None and is_model(name):
        print(f"cnnzoo: no --weights given: {name} is randomly initialised, so the pictures show "
              f"an untrained network", file=sys.stderr)
    return load(name, weights=weights)[0]


def _stages(spec: str | None, n: int) -> list[int]:
    if spec is None:
        return list(range(n))
    try:
        picked = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise CnnzooError(f"--stages takes indices like 0,2 got {spec!r}") from None
    bad = [i for i in picked if not -n <= i < n]
    if bad:
        raise CnnzooError(f"--stages {bad} out of range: the model has {n} feature maps "
                          f"(0..{n - 1})")
    return [i % n for i in picked]


def run(args: argparse.Namespace) -> int:
    if not os.path.isfile(args.image):
        raise CnnzooError(f"image {args.image} does not exist")
    model = _model(args.model, args.weights).eval()
    infos = model.feature_info
    picked = _stages(args.stages, len(infos))
    if args.class_idx is not None and not 0 <= args.class_idx < model.num_classes:
        raise CnnzooError(f"--class {args.class_idx} out of range: {args.model} has "
                          f"{model.num_classes} classes (0..{model.num_classes - 1})")
    if args.layer is not None:
        names = dict(model.named_modules())
        if args.layer not in names:
            raise CnnzooError(f"{args.model} has no module {args.layer!r}; feature maps: "
                              f"{', '.join(i['module'] for i in infos)}")
    outputs = {i: os.path.join(args.output, f"features_{i}_{re.sub(r'[^A-Za-z0-9]+', '_', infos[i]['module'])}.png")
               for i in picked}
    cam_path = os.path.join(args.output, "gradcam.png")
    targets = list(outputs.values()) + [cam_path, os.path.join(args.output, "explain.json")]
    existing = [t for t in targets if os.path.exists(t)]
    if existing and not args.force:
        raise CnnzooError(f"{existing[0]} exists; pass --force to overwrite")
    os.makedirs(args.output, exist_ok=True)

    image, x = load_image(args.image, model)
    maps = feature_maps(model, x, [infos[i]["module"] for i in picked])
    for i, path in outputs.items():
        name = infos[i]["module"]
        fmap = maps[name]
        shown = save_grid(fmap, path, f"{args.model} · {name} · {'×'.join(map(str, fmap.shape[1:]))}")
        print(f"wrote {path} ({shown} of {fmap.shape[1]} channels)")
    cam, cls, prob = grad_cam(model, x, args.layer, args.class_idx)
    heat = resize_map(cam, image.size)
    layer = args.layer or infos[-1]["module"]
    save_overlay(image, heat, cam_path, f"{args.model} Grad-CAM · class {cls} (p={prob:.3f}) · {layer}")
    with open(targets[-1], "w") as f:
        json.dump(dict(model=args.model, image=os.path.abspath(args.image), weights=args.weights,
                       class_idx=cls, probability=prob, layer=layer,
                       feature_maps={infos[i]["module"]: p for i, p in outputs.items()},
                       gradcam=cam_path), f, indent=2)
    print(f"wrote {cam_path} (class {cls}, p={prob:.3f}, Grad-CAM on {layer})")
    return 0
