"""Do texture models transfer to real textures they never saw? (issue 10, section 3)

Run: python benchmarks/transfer.py [--budget 60] [--threads 1] [--out DIR]

Three models, same architecture (cnn), same image size and the same training time budget:

* ``gaussian``: the notebook's scenes (two isotropic Gaussian textures, sigma 1.0 / 0.2), labels fixed;
* ``mixed``: ``texture="mixed"`` (each scene from gaussian, oriented, powerlaw or bandpass), labels any;
* ``mosaic``: real-texture mosaics (``texture="mosaic"``, random rotation, zoom in [1/1.5, 1.5]), labels any.

The real textures available offline are scikit-image's three photographs (brick, grass,
gravel); nothing else installed is a texture photograph. The split is therefore:

* training textures (mosaic model only): brick, grass and a transformed copy of each
  (rotated 45 degrees, zoomed 2x: the central 256 x 256 of the rotated 512 x 512 image
  resized to 512 x 512);
* held-out test textures: gravel and gravel transformed the same way. Every test scene is a
  two-region mosaic of gravel against transformed gravel (crops at random positions, no
  further rotation or zoom), so the test asks "where does the texture's scale/orientation
  change" on a texture no model was trained on. It is not a test on a second, different
  unseen texture: there is none offline.

Scores: 2-region mosaics have arbitrary label numbers, so every model is scored after label
matching: per image (the best matching of each test image, its mean IoU and accuracy, averaged
over the images: the task "split the image into regions of different texture") and over the set (one
matching for all images, ``texseg.evaluation.evaluate(..., matching="set")``; texseg's
validation of arbitrary labels now matches per image). ``constant`` is the trivial baseline (one label everywhere).
The headline is the mean IoU over the two regions; ``own val mIoU`` is each model's score on
its own validation scenes (its training distribution), to tell "did not learn" from "did not transfer".
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

TRAIN_TEXTURES = ("brick", "grass")
TEST_TEXTURE = "gravel"


def transformed(image: np.ndarray) -> np.ndarray:
    """Rotate a square texture by 45 degrees and zoom it 2x (its central quarter, resized back)."""
    from skimage.transform import resize, rotate

    n = image.shape[0]
    rot = rotate(image, 45, order=1, preserve_range=True)
    c = rot[n // 4: n // 4 + n // 2, n // 4: n // 4 + n // 2]  # inside the rotated square's valid area
    return resize(c, (n, n), order=1, preserve_range=True, anti_aliasing=False)


def texture_folders(root: Path) -> tuple[Path, Path]:
    """Write the train and test texture folders (8-bit PNGs) under ``root``."""
    import imageio.v3 as iio
    import skimage.data

    folders = {"train": (root / "train_textures", TRAIN_TEXTURES), "test": (root / "test_textures", (TEST_TEXTURE,))}
    for folder, names in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            image = getattr(skimage.data, name)().astype(np.float64)
            iio.imwrite(folder / f"{name}.png", image.astype(np.uint8))
            iio.imwrite(folder / f"{name}_r45z2.png", np.clip(np.round(transformed(image)), 0, 255).astype(np.uint8))
    return folders["train"][0], folders["test"][0]


class Constant(nn.Module):
    """Predicts label 0 everywhere (the trivial baseline)."""

    def __init__(self) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, 10.0)


def per_image_matched(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Mean over images of the mean IoU (and accuracy) after the best label matching of each image."""
    from texseg.evaluation.matching import match_confusion

    with torch.no_grad():
        pred = (torch.sigmoid(model(images)) <= 0.5).long()  # label 0 where P(label 0) > 0.5
    ious, accs = [], []
    for p, t in zip(pred, labels):
        cm = match_confusion(torch.bincount(t.flatten() * 2 + p.flatten(), minlength=4).reshape(2, 2))[0].double()
        tp = cm.diagonal()
        union = cm.sum(0) + cm.sum(1) - tp
        ious.append(float((tp / union.clamp(min=1)).mean()))
        accs.append(float(tp.sum() / cm.sum()))
    return {"iou": float(np.mean(ious)), "accuracy": float(np.mean(accs))}


def train_model(name: str, out: Path, train_textures: Path, args: argparse.Namespace) -> tuple[nn.Module, float]:
    """Train one model; returns it and its mean IoU on its own validation scenes (matched when labels any)."""
    from texseg.checkpoint import load_model
    from texseg.training import TrainConfig, train

    scene = {"gaussian": {},
             "mixed": {"texture": "mixed"},
             "mosaic": {"texture": "mosaic", "textures": str(train_textures), "texture_rotate": True,
                        "texture_zoom": 1.5}}[name]
    config = TrainConfig(model="cnn", image_size=args.image_size, batch_size=8, time_budget=args.budget,
                         threads=args.threads, device="cpu", seed=0, val_size=16, figures=False, **scene)
    result = train(config, out / f"run-{name}", progress=False)
    print(f"trained {name}: {result.status}, {result.summary.get('iterations', '?')} steps, labels {config.labels}",
          flush=True)
    return load_model(result.run_dir), float(result.summary["val"]["iou"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=60.0, help="training seconds per model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--test-count", type=int, default=256)
    ap.add_argument("--out", default=None, help="keep the runs and texture folders here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from texseg.data import SceneSpec, generate
    from texseg.evaluation import evaluate

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp)
        train_textures, test_textures = texture_folders(out)
        test_spec = SceneSpec(args.image_size, args.image_size / 5, (1.0, 1.0), texture="mosaic",
                              textures=str(test_textures))
        images, labels = generate(test_spec, args.test_count, generator=torch.Generator().manual_seed(2024))
        models: dict[str, nn.Module] = {"constant": Constant()}
        own: dict[str, str] = {"constant": "-"}
        for name in ("gaussian", "mixed", "mosaic"):
            models[name], val_iou = train_model(name, out, train_textures, args)
            own[name] = f"{val_iou:.3f}"
        print(f"\ntest: {args.test_count} mosaics {args.image_size}x{args.image_size} of {TEST_TEXTURE} vs "
              f"{TEST_TEXTURE} rotated 45 deg + zoomed 2x (never seen in training); budget {args.budget:g} s each, "
              f"{args.threads} thread(s)")
        print("| model | trained on | own val mIoU | per-image matched mIoU | per-image matched acc | "
              "set-matched mIoU |")
        print("|---|---|---|---|---|---|")
        trained_on = {"constant": "-", "gaussian": "Gaussian textures (notebook)",
                      "mixed": "gaussian/oriented/powerlaw/bandpass",
                      "mosaic": "brick, grass (+ rotated/zoomed copies)"}
        for name, model in models.items():
            model.eval()
            per = per_image_matched(model, images, labels)
            whole = evaluate(model, images, (labels == 0).float(), 2, matching="set")
            print(f"| {name} | {trained_on[name]} | {own[name]} | {per['iou']:.3f} | {per['accuracy']:.3f} "
                  f"| {whole['iou']:.3f} |")


if __name__ == "__main__":
    main()
