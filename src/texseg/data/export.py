"""Export generated scenes as PNG image/label pairs with a JSON manifest.

Layout of an export folder::

    manifest.json        every parameter, the seed, the label convention, file list
    images/00000.png     8-bit grayscale image (the [0, 1] image times 255, rounded; RGB for colour scenes)
    labels/00000.png     8-bit label image, pixel value = region label 0..K-1

Scenes are drawn in batches of ``batch_size`` from one ``torch.Generator`` seeded with
``seed`` on the CPU, so the same (spec, count, seed, batch_size) reproduces the files
byte for byte (and the manifest records all four).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from texseg._validate import check_int
from texseg.data.scene import SceneSpec, generate
from texseg.io import atomic_path, atomic_write_json
from texseg.signals import stop_point

MANIFEST_VERSION = 1


def _write_png(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, array, extension=".png")


# Region colours of label PNGs: label 0 (Omega_1) yellow, label 1 dark purple, then well-separated hues.
_PALETTE = [(253, 231, 37), (68, 1, 84), (33, 145, 140), (230, 85, 13), (49, 104, 142), (94, 201, 98),
            (214, 39, 40), (148, 103, 189), (140, 86, 75), (227, 119, 194)]


def write_label_png(path: str | os.PathLike[str], labels: np.ndarray) -> None:
    """Write (H, W) labels 0..K-1 as an 8-bit palette PNG, atomically.

    The pixel values are the exact labels (any reader that keeps palette indices, such as
    Pillow's ``np.asarray(Image.open(p))`` or :func:`texseg.data.folder.read_labels`, gets
    them back), and the palette shows each region in its own colour in any image viewer.
    """
    image = Image.fromarray(np.ascontiguousarray(labels, dtype=np.uint8), mode="P")
    colours = [_PALETTE[k % len(_PALETTE)] for k in range(256)]
    image.putpalette([c for rgb in colours for c in rgb])
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def estimate_png_bytes(spec: SceneSpec) -> int:
    """Bytes one exported scene takes at most: an 8-bit image (noise barely compresses; 3 channels for colour)
    and its labels."""
    return int(1.1 * spec.channels * spec.image_size**2) + spec.image_size**2 // 4 + 2048


def check_disk_space(folder: Path, needed: int, what: str) -> None:
    """Refuse up front what cannot fit on the disk of ``folder`` (or of its first existing parent)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if needed > free:
        raise ValueError(f"count: {what} needs about {needed / 2**30:.1f} GiB but only {free / 2**30:.1f} GiB "
                         f"is free on the disk of {existing}")


def export_dataset(
    spec: SceneSpec,
    out_dir: str | os.PathLike[str],
    count: int,
    seed: int = 0,
    *,
    batch_size: int = 64,
    progress: bool = False,
) -> Path:
    """Generate ``count`` scenes and write them as PNG pairs plus ``manifest.json``.

    Args:
        spec: scene parameters (K <= 256 so labels fit in 8 bits); colour scenes are written
            as 8-bit RGB PNGs.
        out_dir: destination folder (created; one that already holds an export is refused).
        count: number of scenes >= 1.
        seed: seed of the CPU generator.
        batch_size: scenes drawn per generator call (part of what the seed reproduces).
        progress: show a progress bar.

    Returns:
        Path of the written manifest.
    """
    check_int("count", count, minimum=1)
    check_int("seed", seed, minimum=0, maximum=2**63 - 1)
    check_int("batch_size", batch_size, minimum=1)
    if spec.num_regions > 256:
        raise ValueError(f"regions must be <= 256 to export 8-bit labels, got {spec.num_regions}")
    out = Path(out_dir)
    _check_out_dir(out, spec, count)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    width = max(5, len(str(count - 1)))
    gen = torch.Generator().manual_seed(seed)
    files: list[dict[str, str]] = []

    with tqdm(total=count, disable=not progress, desc="export", unit="img") as bar:
        for start in range(0, count, batch_size):
            stop_point()  # a stop signal ends the export between two batches (the folder stays unfinished)
            b = min(batch_size, count - start)
            files += _write_batch(out, *generate(spec, b, generator=gen), [f"{start + i:0{width}d}.png"
                                                                          for i in range(b)])
            bar.update(b)
    manifest_path = out / "manifest.json"
    atomic_write_json(manifest_path, _manifest(spec, count, seed, batch_size, files))
    return manifest_path


def _check_out_dir(out: Path, spec: SceneSpec, count: int) -> None:
    """Refuse a folder that holds (part of) an export, or a disk the export cannot fit on."""
    # Never mix two datasets in one folder (stale files would survive a smaller export,
    # and an interrupted export has images but no manifest).
    if (out / "manifest.json").exists():
        raise ValueError(f"{out} already holds an export (manifest.json); choose another `out` folder")
    if any((out / sub).is_dir() and any((out / sub).iterdir()) for sub in ("images", "labels")):
        raise ValueError(f"{out} holds an unfinished export (images without manifest.json); delete it or "
                         "choose another `out` folder")
    check_disk_space(out, count * estimate_png_bytes(spec), f"exporting {count} scenes of {spec.image_size}x"
                                                             f"{spec.image_size}")


def _write_batch(out: Path, images: torch.Tensor, labels: torch.Tensor, names: list[str]) -> list[dict[str, str]]:
    """Write one batch's PNG pairs ((B, C, N, N) images, C = 1 grey or 3 RGB); return their manifest entries."""
    img8 = (images * 255).round().to(torch.uint8)
    img8 = (img8.permute(0, 2, 3, 1) if img8.shape[1] == 3 else img8[:, 0]).numpy()
    lab8 = labels[:, 0].to(torch.uint8).numpy()
    for i, name in enumerate(names):
        _write_png(out / "images" / name, img8[i])
        write_label_png(out / "labels" / name, lab8[i])
    return [{"image": f"images/{name}", "labels": f"labels/{name}"} for name in names]


def _manifest(spec: SceneSpec, count: int, seed: int, batch_size: int, files: list[dict[str, str]]
              ) -> dict[str, Any]:
    return {
        "format": "texseg-export",
        "version": MANIFEST_VERSION,
        "scene": spec.to_dict(),
        "count": count,
        "seed": seed,
        "batch_size": batch_size,
        "generator": "torch.Generator (CPU) seeded once; scenes drawn in batches of batch_size",
        "labels": "pixel value k = region k with texture scene.texture_sigmas[k] (8-bit palette PNG: the value is "
        "the label, the palette only colours it); for 2 regions label 0 is the notebook's Omega_1 "
        "(its mask = labels == 0)",
        "image_encoding": "uint8 = round(255 * image), image normalised to [0, 1] per image"
        + ("; RGB, normalised over its three channels together" if spec.color else ""),
        "files": files,
    }
