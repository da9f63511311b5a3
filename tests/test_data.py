from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SHARED
from datagen import make_idx_folder, make_image_folder

from cnnzoo.data import (EpochSampler, build_transform, load_source, make_split, read_idx,
                         split_indices)
from cnnzoo.errors import DataError
from cnnzoo.registry import create_model


def test_digits_are_sklearns_1797_glyphs_stretched_to_8_bit():
    src = load_source("digits")
    assert len(src.train) == 1797 and src.val is None
    assert src.classes == [str(i) for i in range(10)]
    image, label = src.train[0]
    assert image.shape == (1, 8, 8) and image.dtype == torch.uint8
    assert int(src.train.images.max()) == 255  # 16 grey levels scaled to the full byte range


def test_real_mnist_test_set_is_read_from_its_idx_files():
    src = load_source(str(SHARED / "data" / "mnist"))
    assert len(src.train) == 10000 and src.val is None  # t10k alone is a single split
    image, label = src.train[0]
    assert image.shape == (1, 28, 28)
    assert label == 7  # the data README: "the first image is drawn as a 7"
    assert src.num_classes == 10


def test_idx_folder_written_by_test_round_trips(tmp_path):
    make_idx_folder(tmp_path / "idx", n=50, prefixes=("train", "t10k"))
    src = load_source(str(tmp_path / "idx"))
    assert len(src.train) == 50 and len(src.val) == 50  # train + t10k: two splits
    raw = read_idx(tmp_path / "idx" / "train-labels-idx1-ubyte.gz")
    assert [src.train[i][1] for i in range(50)] == raw.tolist()


def test_truncated_idx_file_is_a_data_error(tmp_path):
    make_idx_folder(tmp_path, n=10)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    import gzip
    data = gzip.decompress(path.read_bytes())[:-5]
    path.write_bytes(gzip.compress(data))
    with pytest.raises(DataError, match="truncated"):
        load_source(str(tmp_path))


def test_image_folder_classes_come_from_sub_folders(tmp_path):
    make_image_folder(tmp_path, per_class=3)
    src = load_source(str(tmp_path))
    assert src.classes == ["blue", "green", "red"] and src.kind == "photo"
    assert len(src.train) == 9


@pytest.mark.parametrize("case, message", [
    ("missing", "no such path"), ("empty", "no class sub-folders"),
    ("one_class", "single class"), ("unreadable", "no readable image"),
    ("no_images", "holds no images")])
def test_bad_data_folders_raise_one_clear_data_error(tmp_path, case, message):
    root = tmp_path / "data"
    if case == "empty":
        root.mkdir()
    elif case == "one_class":
        make_image_folder(root, per_class=2, classes={"cat": (1, 2, 3)})
    elif case == "unreadable":
        # A class whose only image is broken (one among good ones is skipped: test_bad_inputs).
        make_image_folder(root, per_class=2)
        (root / "grey").mkdir()
        (root / "grey" / "broken.png").write_bytes(b"not a png at all")
    elif case == "no_images":
        (root / "a").mkdir(parents=True)
        (root / "b").mkdir()
    with pytest.raises(DataError, match=message) as err:
        # Unreadable files are found up front only when asked (--check-images); otherwise
        # where they are read (tests/test_data_layouts.py).
        load_source(str(root), check_images=case == "unreadable")
    assert "\n" not in str(err.value)


def test_torchvision_set_absent_offline_asks_for_download(tmp_path):
    with pytest.raises(DataError, match="--download"):
        load_source("cifar10", root=tmp_path, download=False)


def test_split_is_seeded_disjoint_and_complete():
    train, val = split_indices(100, 0.2, seed=3)
    assert len(val) == 20 and not set(train) & set(val)
    assert sorted(train + val) == list(range(100))
    assert split_indices(100, 0.2, seed=3) == (train, val)
    assert split_indices(100, 0.2, seed=4)[1] != val


def test_recorded_split_is_reused_exactly():
    src = load_source("digits")
    first = make_split(src, lambda x: x, lambda x: x, val_fraction=0.1, seed=0)
    again = make_split(src, lambda x: x, lambda x: x, val_fraction=None, seed=99,
                       val_indices=first.val_indices)
    assert again.val.indices == first.val.indices
    assert again.train.indices == first.train.indices


def test_two_ranks_together_walk_the_single_process_order():
    one = list(EpochSampler(64, shuffle=True, seed=5))
    r0 = list(EpochSampler(64, shuffle=True, seed=5, rank=0, world=2))
    r1 = list(EpochSampler(64, shuffle=True, seed=5, rank=1, world=2))
    # Step s of batch 8 on one process == steps s of batch 4 on each of the two ranks.
    for s in range(8):
        assert sorted(one[8 * s: 8 * s + 8]) == sorted(r0[4 * s: 4 * s + 4] + r1[4 * s: 4 * s + 4])


def test_sampler_order_depends_on_epoch_only():
    a, b = EpochSampler(50, shuffle=True, seed=1), EpochSampler(50, shuffle=True, seed=1)
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b)
    b.set_epoch(4)
    assert list(a) != list(b)


def test_eval_shards_never_repeat_an_image():
    shards = [list(EpochSampler(7, shuffle=False, rank=r, world=2)) for r in range(2)]
    assert sorted(shards[0] + shards[1]) == list(range(7))


def test_grey_digits_become_rgb_at_the_models_input_size():
    cfg = create_model("resnet18", num_classes=10).default_cfg.replace(input_size=(3, 40, 40))
    x = build_transform(cfg, train=True, kind="digits")(load_source("digits").train[0][0])
    assert x.shape == (3, 40, 40)
    raw = x * torch.tensor(cfg.std)[:, None, None] + torch.tensor(cfg.mean)[:, None, None]
    assert torch.allclose(raw[0], raw[1], atol=1e-6) and torch.allclose(raw[1], raw[2], atol=1e-6)


def test_photo_eval_transform_resizes_then_centre_crops(tmp_path):
    from PIL import Image
    cfg = create_model("lenet5").default_cfg
    image = Image.fromarray(np.full((60, 90, 3), 200, np.uint8))
    x = build_transform(cfg, train=False, kind="photo")(image)
    assert x.shape == (1, 32, 32)  # RGB photo -> the one channel LeNet-5 takes
    expected = (200 / 255 - cfg.mean[0]) / cfg.std[0]
    assert torch.allclose(x, torch.full_like(x, expected), atol=1e-2)


@pytest.mark.parametrize("model, kind, mode", [("lenet5", "photo", "RGB"),
                                              ("resnet18", "photo", "L"),
                                              ("resnet18", "digits", "L")])
def test_direct_compose_gives_the_composes_values_and_random_draws(model, kind, mode):
    # The loaders run build_transform's Compose through DirectCompose: it must be the same
    # function of (image, seed), and leave the generator where the Compose leaves it.
    from PIL import Image

    from cnnzoo.data.loaders import apply_seeded
    from cnnzoo.data.transforms import DirectCompose, direct

    cfg = create_model(model, num_classes=3).default_cfg
    rng = np.random.default_rng(0)
    for train in (True, False):
        tf = build_transform(cfg, train=train, kind=kind)
        fast = direct(tf)
        assert isinstance(fast, DirectCompose)
        for key in range(40):
            size = tuple(int(v) for v in rng.integers(9, 70, 2))
            pixels = rng.integers(0, 256, (*size, 3 if mode == "RGB" else 1), dtype=np.uint8)
            image = Image.fromarray(pixels.squeeze(-1) if mode == "L" else pixels, mode)
            assert torch.equal(apply_seeded(fast, image, key), apply_seeded(tf, image, key))
            torch.manual_seed(key)
            a, after = fast(image), torch.rand(1)
            torch.manual_seed(key)
            b = tf(image)
            assert torch.equal(a, b) and torch.equal(after, torch.rand(1))


@pytest.mark.parametrize("model", ["lenet5", "resnet18"])
def test_batched_fetch_gives_the_items_one_by_one_fetches_give(tmp_path, model):
    # __getitems__ runs the per-pixel end of the transform on the whole batch: the same bits
    # as item by item, with unreadable files substituted (training) or left out (evaluation).
    from cnnzoo.data.loaders import TransformedSubset, sample_seed

    root = make_image_folder(tmp_path / "data", per_class=6, size=23)
    (root / "red" / "2.png").write_bytes(b"not a png")
    src = load_source(str(root))
    cfg = create_model(model, num_classes=3).default_cfg.replace(input_size=(3, 40, 40))
    for train in (True, False):
        ds = TransformedSubset(src.train, None, build_transform(cfg, train=train, kind="photo"),
                               substitute=train)
        items = [(i, sample_seed(3, 1, i)) if train else i for i in range(len(ds))]
        one_by_one, batched = [ds[i] for i in items], ds.__getitems__(items)
        assert len(batched) == len(one_by_one) == len(ds)
        for (a, la, na), (b, lb, nb) in zip(one_by_one, batched):
            assert la == lb and na == nb
            assert b is None if a is None else torch.equal(a, b)
        assert sum(x is None for x, _, _ in batched) == (0 if train else 1)


def test_torchvision_mnist_loads_from_local_files_without_download(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    for prefix in ("train", "t10k"):
        make_idx_folder(tmp_path / prefix, n=20, prefixes=(prefix,), seed=len(prefix))
        for kind in ("images-idx3", "labels-idx1"):
            import gzip
            data = gzip.decompress((tmp_path / prefix / f"{prefix}-{kind}-ubyte.gz").read_bytes())
            raw.mkdir(parents=True, exist_ok=True)
            (raw / f"{prefix}-{kind}-ubyte").write_bytes(data)
    src = load_source("mnist", root=tmp_path, download=False)
    assert len(src.train) == 20 and len(src.val) == 20 and src.kind == "digits"
    assert src.classes[0] == "zero"


def test_direct_transforms_fall_back_to_v2_without_torchvisions_private_helpers(monkeypatch):
    """DirectCompose leans on two private torchvision helpers; without them v2 runs as it is."""
    from cnnzoo.data import build_transform
    from cnnzoo.data import transforms as tfs
    from cnnzoo.registry import default_cfg

    tf = build_transform(default_cfg("lenet5"), train=False, kind="digits")
    assert isinstance(tfs.direct(tf), tfs.DirectCompose)
    monkeypatch.setattr(tfs, "check_type", None)
    assert tfs.direct(tf) is tf
