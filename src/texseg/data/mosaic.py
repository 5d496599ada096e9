"""Real-texture mosaics: the generator's random partitions filled with crops of texture photographs.

Each region of a scene gets a different texture image of a pool (drawn without
replacement per scene), cropped at a random position, optionally rotated by a random
angle and zoomed by a random factor, all drawn from the scene's ``torch.Generator`` so a
seed reproduces the mosaic (given the same texture files).

Pools: ``"builtin"`` is the texture photographs bundled in scikit-image's wheel
(``skimage.data.brick``, ``grass``, ``gravel``; nothing is downloaded); ``"skimage"`` is
those three plus texture-like crops of the other images scikit-image bundles (moon surface,
cat fur, a wooden table, retinal vessels, printed and handwritten text, a cell culture's
background, a star field: :data:`SKIMAGE_TEXTURES`, each at least 135 x 135 pixels, so
crops up to 128 x 128); or a folder of image files (read like ``texseg predict`` reads
them: luminance in [0, 1]). Colour pools (``color=True``, for colour scenes) keep each
image's RGB (grey images repeated to three channels), min-max normalised over its channels.

Held-out textures: ``split="train"`` / ``"test"`` divides the pool's textures (not the
crops) with a fixed seed, ``test_fraction`` of them (at least one) going to the test side,
so a model can be scored on textures its training never saw.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import skimage.data
import torch
import torch.nn.functional as F
from skimage.color import rgb2gray

from texseg.images import list_images, normalize_image, read_image

__all__ = ["BUILTIN_TEXTURES", "SKIMAGE_TEXTURES", "SPLITS", "fill_mosaic", "split_names", "texture_pool"]

BUILTIN_TEXTURES = ("brick", "grass", "gravel")
# The "skimage" pool: texture name -> (skimage.data function, (rows, columns) of its texture-like
# part, None: the whole image). Only images shipped in scikit-image's wheel (its legacy data
# folder): none of these needs a download.
SKIMAGE_TEXTURES: dict[str, tuple[str, tuple[slice, slice] | None]] = {
    "brick": ("brick", None),
    "grass": ("grass", None),
    "gravel": ("gravel", None),
    "moon": ("moon", None),  # lunar surface, 512 x 512
    "fur": ("chelsea", (slice(150, 300), slice(0, 150))),  # the cat's cheek and neck fur
    "wood": ("coffee", (slice(0, 135), slice(450, 600))),  # the table top behind the cup
    "vessels": ("retina", (slice(400, 1000), slice(750, 1350))),  # retinal blood vessels
    "print": ("page", (slice(45, 180), slice(0, 384))),  # lines of printed text
    "handwriting": ("text", None),  # handwritten formulas on lined paper
    "cells": ("cell", (slice(0, 300), slice(0, 300))),  # the blurred background of a cell culture
    "stars": ("hubble_deep_field", None),  # a star field
}
SPLITS = ("all", "train", "test")


def split_names(names: list[str], split: str, test_fraction: float = 0.34, seed: int = 0) -> list[str]:
    """The textures of one side of a seeded split of ``names`` (sorted first, so the split is stable)."""
    if split not in SPLITS:
        raise ValueError(f"texture_split must be one of {', '.join(SPLITS)}; got {split!r}")
    names = sorted(names)
    if split == "all":
        return names
    order = np.random.default_rng(seed).permutation(len(names))
    n_test = min(len(names) - 1, max(1, round(test_fraction * len(names))))
    chosen = order[:n_test] if split == "test" else order[n_test:]
    return [names[i] for i in sorted(chosen)]


@functools.lru_cache(maxsize=8)
def _load_pool(source: str, color: bool = False) -> tuple[tuple[str, torch.Tensor], ...]:
    """All textures of ``source`` as (name, (H, W) float32 luminance in [0, 1]), cached per process.

    ``color``: (3, H, W) RGB in [0, 1] instead.
    """
    if source == "builtin" and not color:
        out = []
        for name in BUILTIN_TEXTURES:
            image = getattr(skimage.data, name)().astype(np.float32)
            out.append((name, torch.from_numpy(image / 255.0)))
        return tuple(out)
    if source in ("builtin", "skimage"):
        names = BUILTIN_TEXTURES if source == "builtin" else tuple(SKIMAGE_TEXTURES)
        return tuple((name, _skimage_texture(*SKIMAGE_TEXTURES[name], color=color)) for name in names)
    folder = Path(source)
    if not folder.is_dir():
        raise ValueError(f"textures must be 'builtin', 'skimage' or a folder of texture images; {source!r} is not "
                         "a folder")
    files = list_images(folder)
    if not files:
        raise ValueError(f"textures: no image files in {folder}")
    pool = []
    for f in files:
        image = normalize_image(read_image(f, color=color))
        pool.append((f.stem, torch.from_numpy(np.ascontiguousarray(np.moveaxis(image, -1, 0)) if color else image)))
    return tuple(pool)


def _skimage_texture(function: str, box: tuple[slice, slice] | None, color: bool = False) -> torch.Tensor:
    """One image bundled with scikit-image, as (H, W) float32 luminance in [0, 1] (min-max), cropped to ``box``.

    ``color``: (3, H, W) RGB, min-max over its channels, grey images repeated.
    """
    image = np.asarray(getattr(skimage.data, function)())
    if color:
        rgb = image[..., :3].astype(np.float64) if image.ndim == 3 else np.repeat(image[..., None], 3, -1) * 1.0
        grey = np.moveaxis(rgb[box] if box is not None else rgb, -1, 0)
    else:
        grey = rgb2gray(image[..., :3]) if image.ndim == 3 else image.astype(np.float64)
        if box is not None:
            grey = grey[box]
    lo, hi = float(grey.min()), float(grey.max())
    return torch.from_numpy(np.ascontiguousarray((grey - lo) / max(hi - lo, 1e-12), dtype=np.float32))


def texture_pool(source: str, split: str = "all", test_fraction: float = 0.34, seed: int = 0, *,
                 color: bool = False) -> list[tuple[str, torch.Tensor]]:
    """The textures (name, (H, W) tensor; (3, H, W) with ``color``) of ``source`` on one side of the split."""
    pool = dict(_load_pool(str(source), color))
    return [(n, pool[n]) for n in split_names(list(pool), split, test_fraction, seed)]


def _uniform(generator: torch.Generator | None, lo: float = 0.0, hi: float = 1.0) -> float:
    u = float(torch.rand((), generator=generator, device=generator.device if generator else None))
    return lo + (hi - lo) * u


def _crop(texture: torch.Tensor, n: int, generator: torch.Generator | None, rotate: bool,
          max_zoom: float | None, name: str) -> torch.Tensor:
    """One N x N crop of ``texture`` at a random position, rotation and zoom (bilinear)."""
    zoom = math.exp(_uniform(generator, -math.log(max_zoom), math.log(max_zoom))) if max_zoom else 1.0
    angle = _uniform(generator, 0, 2 * math.pi) if rotate else 0.0
    side = n / zoom  # texture pixels covered by the crop
    half = side * (abs(math.cos(angle)) + abs(math.sin(angle))) / 2  # half the rotated square's extent
    h, w = texture.shape[-2:]
    if 2 * half > min(h, w):
        raise ValueError(f"textures: {name} is {w}x{h} pixels, too small for {n}x{n} crops at zoom {zoom:.2f}"
                         + (" with rotation" if rotate else ""))
    # Integer offsets when neither zoom nor rotation: the crop is then the texture's own pixels.
    cy = math.floor(_uniform(generator, half, h - half) - n / 2) + n / 2 if not (rotate or max_zoom) else \
        _uniform(generator, half, h - half)
    cx = math.floor(_uniform(generator, half, w - half) - n / 2) + n / 2 if not (rotate or max_zoom) else \
        _uniform(generator, half, w - half)
    offsets = (torch.arange(n, dtype=torch.float32) + 0.5 - n / 2) / zoom
    oy, ox = torch.meshgrid(offsets, offsets, indexing="ij")
    px = cx + math.cos(angle) * ox - math.sin(angle) * oy
    py = cy + math.sin(angle) * ox + math.cos(angle) * oy
    grid = torch.stack([2 * px / w - 1, 2 * py / h - 1], dim=-1)[None]
    planes = texture[None] if texture.ndim == 3 else texture[None, None]
    return F.grid_sample(planes, grid, mode="bilinear", align_corners=False)[0]  # (C, N, N)


def fill_mosaic(labels: torch.Tensor, num_regions: int, pool: list[tuple[str, torch.Tensor]],
                generator: torch.Generator | None, *, rotate: bool = False, max_zoom: float | None = None
                ) -> torch.Tensor:
    """Fill each region of each scene with a crop of a different texture.

    Args:
        labels: (B, 1, N, N) int64 region labels 0..K-1.
        num_regions: K.
        pool: textures from :func:`texture_pool` (at least K of them).
        generator: draws the textures, positions, angles and zooms.
        rotate: random rotation of each crop.
        max_zoom: if given (> 1), a log-uniform zoom in [1/max_zoom, max_zoom].

    Returns:
        (B, C, N, N) float32 image (not yet normalised), C the channels of the pool's textures.
    """
    b, _, n, _ = labels.shape
    k = num_regions
    if len(pool) < k:
        raise ValueError(f"textures: {k} regions need at least {k} different textures; the pool has "
                         f"{len(pool)} ({', '.join(name for name, _ in pool)})")
    dev = generator.device if generator is not None else None
    channels = pool[0][1].shape[0] if pool[0][1].ndim == 3 else 1
    image = torch.zeros((b, channels, n, n), dtype=torch.float32)
    cpu_labels = labels.cpu()
    for i in range(b):
        chosen = torch.randperm(len(pool), generator=generator, device=dev)[:k].tolist()
        for region, t in enumerate(chosen):
            name, texture = pool[t]
            crop = _crop(texture, n, generator, rotate, max_zoom, name)
            image[i] = torch.where(cpu_labels[i] == region, crop, image[i])
    return image
