"""Folder datasets: the export round trip, validation of every problem kind, crops, splits, eval --data."""

from __future__ import annotations

import json
import re

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from conftest import run_main
from texseg.checkpoint import save_model
from texseg.data import SceneSpec, generate
from texseg.data.export import export_dataset
from texseg.data.folder import ImageFolderDataset, read_labels, validate_folder
from texseg.errors import DataError

run = run_main


def test_export_round_trip(tmp_path):
    spec = SceneSpec(40, 8.0, (0.3, 1.0, 2.0))
    export_dataset(spec, tmp_path / "d", 5, seed=3)
    data = validate_folder(tmp_path / "d")
    assert data.num_regions == 3 and len(data.pairs) == 5
    ds = ImageFolderDataset(data, 40, augment=False)
    images, labels = generate(spec, 5, generator=torch.Generator().manual_seed(3))
    for i in range(5):
        image, lab = ds.full(i)
        assert torch.equal(lab, labels[i, 0])
        # 8-bit PNGs, normalised again as a whole: within one grey level of the generated image.
        assert float((image - images[i, 0]).abs().max()) <= 1 / 255 + 1e-6


def _pairs(root, sizes=((40, 50), (60, 40), (48, 48))):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        iio.imwrite(root / "images" / f"im{i}.png", (rng.random((h, w)) * 255).astype(np.uint8))
        mask = np.zeros((h, w), np.uint8)
        mask[: h // 2] = 255
        iio.imwrite(root / "masks" / f"im{i}.png", mask)
    return root


def test_binary_masks_follow_the_mask_convention(tmp_path):
    root = _pairs(tmp_path)
    labels = read_labels(root / "masks" / "im0.png")
    assert labels[0, 0] == 0 and labels[-1, 0] == 1  # white (mask 1) is label 0
    assert validate_folder(root).num_regions == 2


def test_every_problem_is_reported_in_one_line_naming_the_file(tmp_path):
    root = _pairs(tmp_path)
    iio.imwrite(root / "images" / "lonely.png", np.zeros((30, 30), np.uint8))  # missing pair
    iio.imwrite(root / "masks" / "orphan.png", np.zeros((30, 30), np.uint8))  # missing pair
    iio.imwrite(root / "images" / "size.png", np.zeros((30, 30), np.uint8))
    iio.imwrite(root / "masks" / "size.png", np.zeros((30, 31), np.uint8))  # size mismatch
    iio.imwrite(root / "images" / "range.png", np.zeros((30, 30), np.uint8))
    iio.imwrite(root / "masks" / "range.png", np.full((30, 30), 7, np.uint8))  # out of range for K=2
    (root / "images" / "broken.png").write_bytes(b"not a png")  # unreadable
    iio.imwrite(root / "masks" / "broken.png", np.zeros((30, 30), np.uint8))
    with pytest.raises(DataError) as exc:
        validate_folder(root, num_regions=2)
    lines = str(exc.value).splitlines()[1:]
    assert len(lines) == 5
    for name in ("lonely.png", "orphan.png", "size.png", "range.png", "broken.png"):
        assert sum(name in line for line in lines) == 1, name


def test_crops_flips_rotations_are_reproducible_and_keep_pairs_aligned(tmp_path):
    root = _pairs(tmp_path)
    ds = ImageFolderDataset(root, 32)
    a = ds.sample(8, torch.Generator().manual_seed(1))
    b = ds.sample(8, torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].shape == (8, 1, 32, 32) and a[1].dtype == torch.int64
    # Masks are horizontal halves: after a rotation the boundary is vertical, so both orientations occur.
    vertical = [
        bool((lab[0, :, 0] != lab[0, :, -1]).any()) for lab in ds.sample(32, torch.Generator().manual_seed(2))[1]
    ]
    assert any(vertical) and not all(vertical)
    x, y = ds[0]
    assert x.shape == (1, 32, 32) and y.shape == (1, 32, 32)
    # In the main process (num_workers=0) __getitem__ draws from torch's global RNG.
    torch.manual_seed(0)
    first = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))[0]
    torch.manual_seed(0)
    assert torch.equal(first, next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))[0])


def test_held_out_split_is_disjoint_and_fixed_by_seed(tmp_path):
    root = _pairs(tmp_path, sizes=[(32, 32)] * 10)
    ds = ImageFolderDataset(root, 16)
    train, val = ds.split(0.3, seed=4)
    assert len(val) == 3 and len(train) == 7 and not set(train.indices) & set(val.indices)
    assert ds.split(0.3, seed=4)[1].indices == val.indices and ds.split(0.3, seed=5)[1].indices != val.indices
    with pytest.raises(DataError, match="smaller than 64x64"):
        ImageFolderDataset(validate_folder(root), 64)


def test_eval_data_scores_a_folder(capsys, tmp_path):
    torch.manual_seed(0)
    from texseg.models import create_model

    model = create_model("cnn", num_channels=4)
    (tmp_path / "run").mkdir()
    save_model(model, tmp_path / "run", name="cnn", kwargs={"num_channels": 4}, num_regions=2)
    export_dataset(SceneSpec(32, 6.0, (0.2, 1.2)), tmp_path / "d", 3, seed=1)
    code, out, err = run(capsys, "eval", str(tmp_path / "run"), "--data", str(tmp_path / "d"), "--json")
    assert code == 0, err
    metrics = json.loads(out)["metrics"]
    assert metrics["images"] == 3 and 0 <= metrics["accuracy"] <= 1
    code, out, _ = run(capsys, "eval", str(tmp_path / "run"), "--data", str(tmp_path / "d"), "--matched", "--json")
    assert json.loads(out)["matching"] == "image"  # --matched: each image's labels matched on their own
    assert json.loads(out)["metrics"]["accuracy"] >= max(metrics["accuracy"], 1 - metrics["accuracy"]) - 1e-9
    code, out, _ = run(capsys, "eval", str(tmp_path / "run"), "--data", str(tmp_path / "d"))
    assert code == 0 and "per image (mean over 3 images, 95% interval of that mean):" in out
    assert re.search(r"iou\s+0\.\d{4} \[0\.\d{4}, [01]\.\d{4}\]", out) and "Omega_1" not in out
    code, out, _ = run(capsys, "eval", str(tmp_path / "run"), "--data", str(tmp_path / "d"), "--json")
    per_image = json.loads(out)["per_image_mean"]["iou"]
    assert per_image["images"] == 3 and 0 <= per_image["low"] <= per_image["mean"] <= per_image["high"] <= 1
    code, _, err = run(capsys, "eval", str(tmp_path / "run"), "--data", str(tmp_path / "nope"))
    assert code == 2 and "nope: not a folder" in err


def test_train_on_a_folder_names_its_held_out_crops_and_checks_regions(capsys, tmp_path):
    export_dataset(SceneSpec(32, 6.0, (0.2, 1.2)), tmp_path / "d", 5, seed=1)
    args = ["train", "--data", str(tmp_path / "d"), "--image-size", "16", "--model", "cnn", "--model-arg",
            "num_channels=4", "--iterations", "2", "--val-size", "4", "--batch-size", "2", "--quiet"]
    code, out, err = run(capsys, *args, "--out", str(tmp_path / "run"))
    assert code == 0, err
    assert "4 crops of 1 held-out images of" in out and "(0.2 of its 5, never trained on)" in out
    assert "scenes of the training scene" not in out
    assert "Omega_1" not in out and "iou of label 0" in out
    # Labels 0..1 are two regions: --regions 3 is refused before training, naming the flag.
    code, _, err = run(capsys, *args, "--regions", "3", "--out", str(tmp_path / "run3"))
    assert code == 2 and "--regions must be 2 for the labels in" in err and err.count("\n") == 1
    assert not (tmp_path / "run3" / "model.safetensors").exists()
