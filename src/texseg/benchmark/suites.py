"""Benchmark suites: named, fixed test sets of known difficulty, and user-defined ones.

A suite is a list of images with true labels. The named suites are generated scenes with
a fixed seed (64 images of 128 x 128 each), from easy to hard:

==========  ========================================  =====================
name        texture sigmas (one per region)           partition sigma
==========  ========================================  =====================
notebook    0.2, 1.2 (the notebook's difficulty)      N/5
medium      1.0, 1.5                                  N/5
hard        2, 3                                      N/5
k4          0.2, 0.8, 2, 4 (four regions)             N/5
fine        0.2, 1.2                                  N/10 (smaller regions)
==========  ========================================  =====================

Each generated suite has three disjoint splits drawn from its own seeds: ``test`` (what
the benchmark scores), ``tune`` (for choosing method defaults, never the test images) and
``train`` (labelled images a supervised method may fit on). User suites come from a JSON
file (generated scenes) or a folder of images with masks (``images/`` plus ``masks/`` or
``labels/``, files matched by stem, e.g. the output of ``texseg generate --out``); a folder
has only a test split.

Add a suite with :func:`register_suite` (a name and a function returning a :class:`Suite`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from texseg._validate import check_choice, check_int
from texseg.data import SceneSpec, estimate_memory_bytes, generate
from texseg.data.folder import label_values_problem, read_labels
from texseg.device import check_memory
from texseg.errors import TexsegError
from texseg.images import IMAGE_EXTENSIONS, MAX_PIXELS, normalize_image, read_image

__all__ = ["SPLITS", "Suite", "SuiteError", "get_suite", "list_suites", "register_suite", "resolve_suite"]

SPLITS = ("test", "tune", "train")
# Seeds of the three splits, offset from a suite's base seed; far from the seeds
# `texseg train` uses (0.. for training, 987654321 for validation).
_SPLIT_OFFSETS = {"test": 0, "tune": 1_000_003, "train": 2_000_003}
_IMAGE_EXTS = IMAGE_EXTENSIONS  # the one list of texseg.images


class SuiteError(TexsegError):
    """A suite folder or file cannot be read."""


@dataclass(frozen=True)
class Suite:
    """A named set of images with true labels.

    Attributes:
        name: shown in tables and file names.
        description: one line.
        num_regions: K, the number of true regions.
        count: number of test images.
        spec: the generated scene (None for a folder suite).
        seed: base seed of a generated suite.
        folder: the folder of a folder suite.
        max_pixels: the pixel limit of a folder suite's files (see :data:`texseg.images.MAX_PIXELS`).
    """

    name: str
    description: str
    num_regions: int
    count: int
    spec: SceneSpec | None = None
    seed: int = 0
    folder: str | None = None
    max_pixels: int | None = MAX_PIXELS

    def has_split(self, split: str) -> bool:
        """Whether :meth:`load` can give ``split`` (folders have only ``test``)."""
        return self.spec is not None or split == "test"

    def load(self, split: str = "test", count: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The images and labels of ``split``.

        Args:
            split: ``test``, ``tune`` or ``train``.
            count: how many (default: the suite's ``count``).

        Returns:
            images (B, 1, H, W) float32 in [0, 1], labels (B, 1, H, W) int64 in 0..K-1.
        """
        check_choice("split", split, SPLITS)
        if not self.has_split(split):
            raise ValueError(f"split {split!r} does not exist for suite {self.name} (a folder has only 'test')")
        if self.spec is None:
            images, labels = _read_folder(Path(self.folder or "."), self.max_pixels)
            return (images, labels) if count is None else (images[:count], labels[:count])
        n = self.count if count is None else check_int("count", count, minimum=1)
        size = self.spec.image_size
        check_memory(estimate_memory_bytes(self.spec, n), torch.device("cpu"),
                     f"suite {self.name}: generating its {n} images of {size}x{size}",
                     "use a smaller count (or image_size) in the suite's file")
        gen = torch.Generator().manual_seed(self.seed + _SPLIT_OFFSETS[split])
        return generate(self.spec, n, generator=gen)

    def describe(self) -> dict[str, Any]:
        """What identifies the suite's test data (JSON types)."""
        out: dict[str, Any] = {"name": self.name, "num_regions": self.num_regions, "count": self.count}
        if self.spec is not None:
            out.update(scene=self.spec.to_dict(), seed=self.seed)
        else:
            out["folder"] = str(Path(self.folder or ".").resolve())
            out["fingerprint"] = _folder_fingerprint(Path(self.folder or "."))
        return out


def _generated(name: str, description: str, sigmas: tuple[float, ...], partition: float, seed: int,
               size: int = 128, count: int = 64) -> Suite:
    spec = SceneSpec(size, partition * size, sigmas, 1.0)
    return Suite(name, description, len(sigmas), count, spec, seed)


_REGISTRY: dict[str, Callable[[], Suite]] = {
    "notebook": lambda: _generated("notebook", "the notebook's scene: sigmas 0.2 / 1.2, partition N/5",
                                   (0.2, 1.2), 1 / 5, 110_000),
    "medium": lambda: _generated("medium", "closer textures: sigmas 1.0 / 1.5, partition N/5",
                                 (1.0, 1.5), 1 / 5, 120_000),
    "hard": lambda: _generated("hard", "coarse, similar textures: sigmas 2 / 3, partition N/5",
                               (2.0, 3.0), 1 / 5, 130_000),
    "k4": lambda: _generated("k4", "four regions: sigmas 0.2 / 0.8 / 2 / 4, partition N/5",
                             (0.2, 0.8, 2.0, 4.0), 1 / 5, 140_000),
    "fine": lambda: _generated("fine", "smaller regions: sigmas 0.2 / 1.2, partition N/10",
                               (0.2, 1.2), 1 / 10, 150_000),
}
# Suites that cannot be built from what ships: asking for one says why and what to do instead.
_PLANNED = {"real": "needs real textures kept out of any training, and the only ones that ship offline "
                    "(scikit-image's brick, grass, gravel) are too few to hold any out; describe it in a JSON "
                    "suite from your own texture folder: {\"name\": \"real\", \"scene\": {\"texture\": "
                    "\"mosaic\", \"textures\": \"DIR\", \"texture_split\": \"test\", ...}}"}


def register_suite(name: str, factory: Callable[[], Suite]) -> None:
    """Make ``factory()`` available as the named suite ``name`` (replaces a planned one)."""
    if not isinstance(name, str) or not name or name in _REGISTRY:
        raise ValueError(f"name must be a new non-empty suite name, got {name!r}")
    _REGISTRY[name] = factory
    _PLANNED.pop(name, None)


def list_suites() -> dict[str, str]:
    """Named suites: name -> description (planned ones say they are not available)."""
    out = {name: factory().description for name, factory in _REGISTRY.items()}
    out.update({name: f"({why})" for name, why in _PLANNED.items()})
    return out


def get_suite(name: str) -> Suite:
    """The named suite ``name``."""
    if name in _REGISTRY:
        return _REGISTRY[name]()
    if name in _PLANNED:
        raise ValueError(f"suite {name!r}: {_PLANNED[name]}")
    raise ValueError(f"suite must be one of {', '.join(_REGISTRY)}, a .json file or a folder; got {name!r}")


def resolve_suite(name_or_path: str | os.PathLike[str], *, max_pixels: int | None = MAX_PIXELS) -> Suite:
    """A named suite, a JSON suite file, or an image folder with masks (its files' pixel limit: ``max_pixels``)."""
    text = os.fspath(name_or_path)
    if text in _REGISTRY or text in _PLANNED:
        return get_suite(text)
    path = Path(text)
    if path.suffix.lower() == ".json" and path.is_file():
        return suite_from_json(path)
    if path.is_dir():
        return suite_from_folder(path, max_pixels=max_pixels)
    return get_suite(text)  # the one-line error listing what is allowed


def suite_from_json(path: str | os.PathLike[str]) -> Suite:
    """A generated suite described by a JSON file.

    The file holds ``{"scene": <SceneSpec.to_dict()>, "count": 64, "seed": 0}`` and
    optionally ``"name"`` (default: the file's stem) and ``"description"``.
    """
    from texseg.io import read_json

    path = Path(path)
    d = read_json(path)
    allowed = {"name", "description", "scene", "count", "seed"}
    if not isinstance(d, dict) or not isinstance(d.get("scene"), dict) or set(d) - allowed:
        raise ValueError(f"{path}: a suite file must be an object with 'scene' (an object of scene "
                         f"parameters) and optionally {', '.join(sorted(allowed - {'scene'}))}")
    try:
        spec = SceneSpec.from_dict(d["scene"])
        count = check_int("count", d.get("count", 64), minimum=1, maximum=100_000)
        seed = check_int("seed", d.get("seed", 0), minimum=0, maximum=2**62)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: {e}") from None
    name = str(d.get("name", path.stem))
    return Suite(name, str(d.get("description", f"scene from {path.name}")), spec.num_regions, count, spec, seed)


def _pairs(folder: Path) -> list[tuple[Path, Path]]:
    images_dir = folder / "images"
    mask_dirs = [folder / d for d in ("masks", "labels") if (folder / d).is_dir()]
    if not images_dir.is_dir() or not mask_dirs:
        raise SuiteError(f"{folder}: a suite folder needs images/ and masks/ (or labels/)")
    masks = {p.stem: p for p in sorted(mask_dirs[0].iterdir()) if p.suffix.lower() in _IMAGE_EXTS}
    images = [p for p in sorted(images_dir.iterdir()) if p.suffix.lower() in _IMAGE_EXTS]
    missing = [p.name for p in images if p.stem not in masks]
    if missing:
        raise SuiteError(f"{folder}: no mask in {mask_dirs[0].name}/ for {missing[0]}"
                         + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
    if not images:
        raise SuiteError(f"{folder}: images/ holds no image files ({', '.join(_IMAGE_EXTS)})")
    return [(p, masks[p.stem]) for p in images]


def _folder_fingerprint(folder: Path) -> str:
    """Hash of the names, sizes and modification times of a folder suite's files."""
    h = hashlib.sha256()
    for image, mask in _pairs(folder):
        for p in (image, mask):
            st = p.stat()
            h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def _read_mask(path: Path, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Labels 0..K-1 in texseg's one convention (palette PNGs, 0..K-1 label images, 0/255 masks)."""
    try:
        return read_labels(path, max_pixels=max_pixels)
    except TexsegError as e:
        raise SuiteError(str(e)) from None


def _read_folder(folder: Path, max_pixels: int | None = MAX_PIXELS) -> tuple[torch.Tensor, torch.Tensor]:
    """The images (read by texseg's one reader, luminance, min-max per image) and masks of a folder suite."""
    images, masks = [], []
    for image_path, mask_path in _pairs(folder):
        try:
            image = normalize_image(read_image(image_path, max_pixels=max_pixels))
        except TexsegError as e:
            raise SuiteError(str(e)) from None
        mask = _read_mask(mask_path, max_pixels)
        if mask.shape != image.shape:
            raise SuiteError(f"{mask_path}: mask is {mask.shape}, its image {image.shape}")
        if images and image.shape != images[0].shape:
            raise SuiteError(f"{image_path}: all images of a suite must have one size; "
                             f"{image.shape} differs from {images[0].shape}")
        images.append(image)
        masks.append(mask)
    labels = np.stack(masks).astype(np.int64)
    return torch.from_numpy(np.stack(images))[:, None], torch.from_numpy(labels)[:, None]


def suite_from_folder(folder: str | os.PathLike[str], *, max_pixels: int | None = MAX_PIXELS) -> Suite:
    """A suite of the image files in ``folder/images`` with their masks (same stem).

    K is the largest label + 1; every label 0..K-1 must occur in some mask (masks such as
    {0, 5} fit neither label images nor 0/255 masks and are refused, naming the folder).
    """
    folder = Path(folder)
    pairs = _pairs(folder)
    values = np.unique(np.concatenate([np.unique(_read_mask(m, max_pixels)) for _, m in pairs]))
    if len(values) < 2:
        raise SuiteError(f"{folder}: the masks hold one value only; a suite needs >= 2 regions")
    problem = label_values_problem(values.tolist(), str(folder))
    if problem:
        raise SuiteError(problem)
    return Suite(folder.name, f"images and masks from {folder}", int(values.max()) + 1, len(pairs),
                 folder=str(folder), max_pixels=max_pixels)
