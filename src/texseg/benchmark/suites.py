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
real        photographed textures, two regions        N/5
real-color  ``real``'s scenes in colour (RGB)          N/5
k2to5       photographed textures, 2 to 5 regions     N/5
families    Worley cells only (procedural), 2 to 4    Voronoi / blobs
==========  ========================================  =====================

``families`` is leave-one-family-out: procedural collages (:mod:`texseg.data.procedural`)
whose every region is a Worley-cell texture with its own parameters, the family
``texseg:general`` was never trained on.

``real`` and ``k2to5`` are mosaics of real textures: the generator's partitions filled with
crops of the photographs and texture-like crops bundled in scikit-image's wheel (brick,
grass, gravel, moon surface, fur, wood, retinal vessels, print, handwriting, cells, stars:
``textures="skimage"``, :mod:`texseg.data.mosaic`; nothing is downloaded), unseen by any
model trained on texseg's procedural textures. ``k2to5`` has 16 images of each K = 2..5,
interleaved (image ``i`` has ``2 + i % 4`` regions, each covering at least 1/(4K) of the
image): its K varies per image, and each image is segmented into its own number of regions
(:meth:`Suite.regions_per_image`).

``real-color`` is ``real`` in colour: the same seed and the same draws, so the same
partitions, textures and crops, each texture in its own colours (fur, wood, retinal vessels
and the star field are colour photographs; the others are grey, repeated to three channels).
Its images are (B, 3, H, W): colour models (``in_channels=3``) see them as they are, grey
models and the classical methods see their luminance
(:func:`texseg.segmenters.base.as_channels`), so comparing a method's ``real`` and
``real-color`` scores measures what colour adds.

Each generated suite has three disjoint splits drawn from its own seeds: ``test`` (what
the benchmark scores), ``tune`` (for choosing method defaults, never the test images) and
``train`` (labelled images a supervised method may fit on). User suites come from a JSON
file (generated scenes) or a folder of images with masks (``images/`` plus ``masks/`` or
``labels/``, files matched by stem, e.g. the output of ``texseg generate --out``). A folder
is its test split; a ``train/`` (and ``tune/``) subfolder laid out the same way
(``train/images/`` + ``train/masks/``) is its training split, on which supervised methods
are fitted. Where the masks of a folder hold different numbers of regions, K varies per image.
A folder with a colour image (RGB or RGBA in its header) is read in colour, (B, 3, H, W), grey
files repeated; a grey folder is read as luminance, as always. A JSON suite is in colour when
its scene says ``"color": true``.

Add a suite with :func:`register_suite` (a name and a function returning a :class:`Suite`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from texseg._validate import check_choice, check_int
from texseg.data import SceneSpec, estimate_memory_bytes, generate
from texseg.data.folder import label_values_problem, read_labels
from texseg.data.mosaic import SKIMAGE_TEXTURES
from texseg.data.procedural import CollageSpec, generate_collage
from texseg.device import check_memory
from texseg.errors import TexsegError
from texseg.images import IMAGE_EXTENSIONS, MAX_PIXELS, image_planes, normalize_image, read_image, read_layout
from texseg.io import read_json

__all__ = ["SPLITS", "Suite", "SuiteError", "get_suite", "list_suites", "register_suite", "resolve_suite"]

SPLITS = ("test", "tune", "train")
# Seeds of the three splits, offset from a suite's base seed; far from the seeds
# `texseg train` uses (0.. for training, 987654321 for validation).
_SPLIT_OFFSETS = {"test": 0, "tune": 1_000_003, "train": 2_000_003}
_IMAGE_EXTS = IMAGE_EXTENSIONS  # the one list of texseg.images
_PART_SEED_STEP = 7_919  # part j of a suite drawn from several scenes: its seeds are offset by j times this


class SuiteError(TexsegError):
    """A suite folder or file cannot be read."""


@dataclass(frozen=True)
class Suite:
    """A named set of images with true labels.

    Attributes:
        name: shown in tables and file names.
        description: one line.
        num_regions: K, the number of true regions (the largest K where it varies per image).
        count: number of test images.
        spec: the generated scene (None for a folder suite or one drawn from ``parts``).
        seed: base seed of a generated suite.
        folder: the folder of a folder suite.
        parts: a suite drawn from several scenes: ``(scene, test images)`` pairs, their images
            interleaved (image ``i`` comes from part ``i % len(parts)`` while it has images left).
        per_image_regions: K varies per image: each image is segmented into its own number
            of regions (:meth:`regions_per_image`).
        min_region_share: ``parts`` only: keep only scenes in which every one of the K regions
            covers at least this fraction of the image divided by K (scenes are drawn until
            enough pass), so an image of a K-region part has K real regions.
        collage: a suite of procedural collages (:mod:`texseg.data.procedural`) drawn from
            this spec, e.g. of a texture family a model never trained on.
        max_pixels: the pixel limit of a folder suite's files (see :data:`texseg.images.MAX_PIXELS`).
        color: a folder suite read in colour, (B, 3, H, W): set when one of its images is
            stored with colour channels (grey ones are then repeated to three channels).
    """
    name: str
    description: str
    num_regions: int
    count: int
    spec: SceneSpec | None = None
    seed: int = 0
    folder: str | None = None
    parts: tuple[tuple[SceneSpec, int], ...] = ()
    per_image_regions: bool = False
    min_region_share: float = 0.0
    collage: CollageSpec | None = None
    max_pixels: int | None = MAX_PIXELS
    color: bool = False

    def __post_init__(self) -> None:
        sizes = {spec.image_size for spec, _ in self.parts}
        if len(sizes) > 1:
            raise ValueError(f"parts must share one image_size, got {sorted(sizes)}")
        if not 0 <= self.min_region_share < 1:
            raise ValueError(f"min_region_share must be in [0, 1), got {self.min_region_share!r}")
        if self.parts and self.count != sum(n for _, n in self.parts):
            raise ValueError(f"count must be the parts' total, {sum(n for _, n in self.parts)}; got {self.count}")

    def has_split(self, split: str) -> bool:
        """Whether :meth:`load` can give ``split`` (a folder: ``test``, and ``train``/``tune`` when it has that
        subfolder)."""
        if self.spec is not None or self.parts or self.collage is not None or split == "test":
            return True
        return (Path(self.folder or ".") / split / "images").is_dir()

    def load(self, split: str = "test", count: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The images and labels of ``split``.

        Args:
            split: ``test``, ``tune`` or ``train``.
            count: how many (default: the suite's ``count``; for a folder or ``parts``, at most
                what the split holds: the first ``count``).

        Returns:
            images (B, 1, H, W) float32 in [0, 1], labels (B, 1, H, W) int64 in 0..K-1.
        """
        check_choice("split", split, SPLITS)
        if not self.has_split(split):
            raise ValueError(f"split {split!r} does not exist for suite {self.name} (a folder has 'test', and "
                             f"'{split}' only with a {split}/ subfolder of images/ and masks/)")
        n = None if count is None else check_int("count", count, minimum=1)
        if self.parts:
            return self._load_parts(split, n)
        if self.collage is not None:
            gen = torch.Generator().manual_seed(self.seed + _SPLIT_OFFSETS[split])
            return generate_collage(self.collage, self.count if n is None else n, generator=gen)
        if self.spec is None:
            folder = Path(self.folder or ".")
            images, labels = _read_folder(folder if split == "test" else folder / split, self.max_pixels,
                                          self.color)
            return (images, labels) if n is None else (images[:n], labels[:n])
        size = self.spec.image_size
        check_memory(estimate_memory_bytes(self.spec, self.count if n is None else n), torch.device("cpu"),
                     f"suite {self.name}: generating its {self.count if n is None else n} images of {size}x{size}",
                     "use a smaller count (or image_size) in the suite's file")
        gen = torch.Generator().manual_seed(self.seed + _SPLIT_OFFSETS[split])
        return generate(self.spec, self.count if n is None else n, generator=gen)

    def _load_parts(self, split: str, count: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Every part's images of ``split`` (each from its own seed), interleaved; the first ``count``."""
        drawn = [self._draw_part(j, split) for j in range(len(self.parts))]
        order = [(j, i) for i in range(max(n for _, n in self.parts)) for j, (_, n) in enumerate(self.parts) if i < n]
        order = order[:count] if count is not None else order
        images = torch.stack([drawn[j][0][i] for j, i in order])
        labels = torch.stack([drawn[j][1][i] for j, i in order])
        return images, labels

    def _draw_part(self, j: int, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Part ``j``'s scenes of ``split``: drawn in rounds from its seed until enough pass ``min_region_share``."""
        spec, n = self.parts[j]
        gen = torch.Generator().manual_seed(self.seed + _SPLIT_OFFSETS[split] + _PART_SEED_STEP * j)
        k, kept_images, kept_labels = spec.num_regions, [], []
        least = self.min_region_share / k * spec.image_size**2
        for _ in range(100):  # a share no scene reaches must fail, not loop for ever
            images, labels = generate(spec, n, generator=gen)
            counts = torch.stack([(labels == r).flatten(1).sum(1) for r in range(k)], dim=1)  # (n, K)
            keep = (counts >= least).all(dim=1) if self.min_region_share > 0 else torch.ones(n, dtype=torch.bool)
            kept_images.append(images[keep])
            kept_labels.append(labels[keep])
            if sum(x.shape[0] for x in kept_images) >= n:
                return torch.cat(kept_images)[:n], torch.cat(kept_labels)[:n]
        raise ValueError(f"min_region_share {self.min_region_share} is too large: too few scenes of "
                         f"{k} regions reach it")

    def regions_per_image(self, labels: torch.Tensor) -> list[int]:
        """K of each image of ``labels`` (B, 1, H, W) (loaded from this suite): the suite's ``num_regions``, or
        where K varies per image, the number of distinct labels in each (at least 2)."""
        if not self.per_image_regions:
            return [self.num_regions] * labels.shape[0]
        return [max(2, int(torch.unique(lab).numel())) for lab in labels]

    def describe(self) -> dict[str, Any]:
        """What identifies the suite's test data (JSON types)."""
        out: dict[str, Any] = {"name": self.name, "num_regions": self.num_regions, "count": self.count}
        if self.per_image_regions:
            out["regions"] = "per image"
        if self.spec is not None:
            out.update(scene=self.spec.to_dict(), seed=self.seed)
        elif self.collage is not None:
            collage = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.collage).items()}
            if not self.collage.color:
                del collage["color"]  # grey suites keep the description (and cached results) they had
            out.update(collage=collage, seed=self.seed)
        elif self.parts:
            out.update(parts=[{"scene": spec.to_dict(), "count": n} for spec, n in self.parts], seed=self.seed,
                       min_region_share=self.min_region_share)
        else:
            folder = Path(self.folder or ".")
            out["folder"] = str(folder.resolve())
            out["fingerprint"] = _folder_fingerprint(folder)
            if self.color:
                out["color"] = True
            for split in ("train", "tune"):
                if self.has_split(split):  # what a supervised method was fitted on is part of its result
                    out[f"{split}_fingerprint"] = _folder_fingerprint(folder / split)
        specs = [self.spec] if self.spec is not None else [spec for spec, _ in self.parts]
        if any(spec.textures == "skimage" for spec in specs):
            # the crops that make the pool: results computed on other crops are other results
            out["skimage_textures"] = hashlib.sha256(repr(sorted(SKIMAGE_TEXTURES.items())).encode()).hexdigest()[:16]
        return out


def _generated(name: str, description: str, sigmas: tuple[float, ...], partition: float, seed: int,
               size: int = 128, count: int = 64) -> Suite:
    spec = SceneSpec(size, partition * size, sigmas, 1.0)
    return Suite(name, description, len(sigmas), count, spec, seed)


def _real_mosaic(k: int, size: int = 128, color: bool = False) -> SceneSpec:
    """K-region mosaics of scikit-image's bundled textures (no smoothing: the photographs as they are)."""
    return SceneSpec(size, size / 5, (1.0,) * k, None, texture="mosaic", textures="skimage", color=color)


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
    "real": lambda: Suite("real", "real-texture mosaics: two of scikit-image's 11 bundled textures, partition N/5",
                          2, 64, _real_mosaic(2), 160_000),
    "real-color": lambda: Suite("real-color", "the real suite in colour: the same mosaics of scikit-image's textures, "
                                "RGB (4 of the 11 textures are colour photographs)", 2, 64,
                                _real_mosaic(2, color=True), 160_000),
    "families": lambda: Suite("families", "leave-one-family-out: collages of Worley cells (the family texseg:general "
                              "never trained on), 2 to 4 regions", 4, 64, seed=180_000, per_image_regions=True,
                              collage=CollageSpec(128, 2, 4, families=("cells",))),
    "k2to5": lambda: Suite("k2to5", "real-texture mosaics with 2 to 5 regions (16 images each), partition N/5",
                           5, 64, seed=170_000, parts=tuple((_real_mosaic(k), 16) for k in range(2, 6)),
                           per_image_regions=True, min_region_share=0.25),
}
# Suites that cannot be built from what ships: name -> why and what to do instead (asking for one says so).
_PLANNED: dict[str, str] = {}


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


def _read_folder(folder: Path, max_pixels: int | None = MAX_PIXELS, color: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The images (read by texseg's one reader, luminance or RGB, min-max per image) and masks of a folder suite."""
    images, masks = [], []
    for image_path, mask_path in _pairs(folder):
        try:
            image = image_planes(normalize_image(read_image(image_path, max_pixels=max_pixels, color=color)))
        except TexsegError as e:
            raise SuiteError(str(e)) from None
        mask = _read_mask(mask_path, max_pixels)
        if mask.shape != image.shape[1:]:
            raise SuiteError(f"{mask_path}: mask is {mask.shape}, its image {image.shape[1:]}")
        if images and image.shape != images[0].shape:
            raise SuiteError(f"{image_path}: all images of a suite must have one size; "
                             f"{image.shape[1:]} differs from {images[0].shape[1:]}")
        images.append(image)
        masks.append(mask)
    labels = np.stack(masks).astype(np.int64)
    return torch.from_numpy(np.stack(images)), torch.from_numpy(labels)[:, None]


def suite_from_folder(folder: str | os.PathLike[str], *, max_pixels: int | None = MAX_PIXELS) -> Suite:
    """A suite of the image files in ``folder/images`` with their masks (same stem).

    A ``train/`` (and ``tune/``) subfolder with the same layout is the suite's training (tuning)
    split. Masks with different numbers of regions make K vary per image. K is the largest
    label + 1; every label 0..K-1 must occur in some mask (masks such as {0, 5} fit neither
    label images nor 0/255 masks and are refused, naming the folder).
    """
    folder = Path(folder)
    pairs = _pairs(folder)
    per_mask = [np.unique(_read_mask(m, max_pixels)) for _, m in pairs]
    values = np.unique(np.concatenate(per_mask))
    if len(values) < 2:
        raise SuiteError(f"{folder}: the masks hold one value only; a suite needs >= 2 regions")
    problem = label_values_problem(values.tolist(), str(folder))
    if problem:
        raise SuiteError(problem)
    for split in ("train", "tune"):
        if (folder / split).is_dir():
            _pairs(folder / split)  # a split that is there must be readable: say what is wrong now
    varies = len({len(v) for v in per_mask}) > 1
    color = any(_stored_in_colour(p) for split in _split_folders(folder) for p, _ in _pairs(split))
    return Suite(folder.name, f"images and masks from {folder}", int(values.max()) + 1, len(pairs),
                 folder=str(folder), per_image_regions=varies, max_pixels=max_pixels, color=color)


def _split_folders(folder: Path) -> list[Path]:
    return [folder] + [folder / s for s in ("train", "tune") if (folder / s).is_dir()]


def _stored_in_colour(path: Path) -> bool:
    """Whether an image file holds colour channels (RGB or RGBA), from its header only."""
    try:
        return read_layout(path).channels >= 3
    except TexsegError:
        return False  # the reading itself reports the file
