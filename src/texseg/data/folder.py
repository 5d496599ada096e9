"""Annotated image folders as a torch Dataset: validation, random crops, flips, rotations, splits.

Accepted layouts (pairs matched by file stem):

* texseg's own export: ``images/``, ``labels/`` and ``manifest.json`` (its file list is used);
* ``images/`` + ``labels/`` or ``images/`` + ``masks/``.

Label files are 8-bit single-channel images: label images with values 0..K-1, or binary
masks with values {0, 255}. A mask follows texseg's mask convention: 255 (mask 1) is
label 0, the region a two-region model gives the probability of; 0 is label 1.

Images are read like ``texseg predict`` reads them (luminance; with ``color=True`` RGB,
grey images repeated to three channels and alpha dropped) and min-max normalised *per whole
image* (over all channels), so training crops see the same intensities as tiles at prediction
time. Every problem of the folder is found before training starts, one line each.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from texseg._validate import check_int, check_positive
from texseg.errors import DataError, ImageReadError
from texseg.images import IMAGE_EXTENSIONS, MAX_PIXELS, normalize_image, read_image, read_pixels

__all__ = ["FolderData", "ImageFolderDataset", "find_pairs", "label_values_problem", "read_labels", "validate_folder"]

# Decoded images are kept in memory when they need at most this many bytes together.
CACHE_BYTES = 2 * 2**30


def _files(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS}


def find_pairs(root: str | os.PathLike[str]) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(image, label) file pairs of a folder, and one line per problem (missing pairs, layout)."""
    root = Path(root)
    if not root.is_dir():
        return [], [f"{root}: not a folder"]
    manifest = root / "manifest.json"
    if manifest.is_file():
        try:
            info = json.loads(manifest.read_text(encoding="utf-8"))
            listed = [(root / f["image"], root / f["labels"]) for f in info["files"]]
        except (ValueError, KeyError, TypeError) as e:
            return [], [f"{manifest}: not a texseg export manifest ({e})"]
        problems = [f"{p}: listed in manifest.json but missing" for pair in listed for p in pair if not p.is_file()]
        return [pair for pair in listed if pair[0].is_file() and pair[1].is_file()], problems
    images_dir = root / "images"
    label_dirs = [root / d for d in ("labels", "masks") if (root / d).is_dir()]
    if not images_dir.is_dir() or not label_dirs:
        return [], [f"{root}: expected images/ and labels/ (or masks/) folders"]
    if len(label_dirs) == 2:
        return [], [f"{root}: has both labels/ and masks/; keep one"]
    images, labels = _files(images_dir), _files(label_dirs[0])
    problems = [f"{images[s]}: no label file with the same name in {label_dirs[0]}" for s in images if s not in labels]
    problems += [f"{labels[s]}: no image with the same name in {images_dir}" for s in labels if s not in images]
    return [(images[s], labels[s]) for s in images if s in labels], problems


def read_labels(path: str | os.PathLike[str], *, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """A label file as (H, W) uint8 labels (a 0/255 mask becomes 255 -> 0, 0 -> 1).

    Read by texseg's one reader (:func:`texseg.images.read_pixels`: header checks, pixel
    limit, ``FILE: cannot decode (...)``); a palette PNG (texseg's own label files) gives
    its indices.
    """
    array = read_pixels(path, max_pixels=max_pixels, min_size=1, palette=True)
    if array.ndim != 2:
        raise ImageReadError(f"{path}: a label image must have one channel, got shape {array.shape}")
    if array.dtype != np.uint8:
        raise ImageReadError(f"{path}: a label image must be 8-bit, got {array.dtype}")
    values = np.unique(array)
    if 255 in values and set(values.tolist()) <= {0, 255}:
        return (array == 0).astype(np.uint8)
    return array


def label_values_problem(values: set[int] | list[int], where: str) -> str | None:
    """One line if ``values`` (all labels of a data set) are not labels 0..K-1 with every label used.

    texseg's convention: label images hold 0..K-1, binary masks 0/255 (already turned into
    labels by :func:`read_labels`). Values such as {0, 5} fit neither: they would be scored
    as six regions, four of them empty.
    """
    present = sorted(set(int(v) for v in values))
    if not present:
        return None
    missing = sorted(set(range(present[-1] + 1)) - set(present))
    if not missing:
        return None
    shown = ", ".join(map(str, missing[:5])) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    return (f"{where}: the labels are {', '.join(map(str, present[:8]))}{' ...' if len(present) > 8 else ''}, "
            f"so label(s) {shown} never appear; label images must hold 0..K-1 (or be 0/255 masks)")


@dataclass
class FolderData:
    """A validated folder: its pairs, their sizes and K."""

    root: Path
    pairs: list[tuple[Path, Path]]
    sizes: list[tuple[int, int]]
    num_regions: int
    max_pixels: int | None = MAX_PIXELS


#: At most this many problem lines are listed; the rest are counted.
MAX_PROBLEM_LINES = 20


def problems_message(problems: list[str], where: str | os.PathLike[str]) -> str:
    """``N problem(s) in WHERE:`` and the first :data:`MAX_PROBLEM_LINES` lines, the others counted."""
    shown = problems[:MAX_PROBLEM_LINES]
    more = len(problems) - len(shown)
    return (f"{len(problems)} problem(s) in {where}:\n" + "\n".join(shown)
            + (f"\n... and {more} more problem(s) not listed" if more else ""))


def validate_folder(root: str | os.PathLike[str], *, num_regions: int | None = None, min_size: int = 16,
                    max_pixels: int | None = MAX_PIXELS) -> FolderData:
    """Read every file of ``root`` once and report all problems together.

    Args:
        root: the folder (layouts in the module docstring).
        num_regions: K the labels must fit (values 0..K-1); None: K = largest label + 1 (at least 2).
        min_size: smallest accepted height and width (e.g. the training crop size).
        max_pixels: the pixel limit of every file (None: none; see :data:`texseg.images.MAX_PIXELS`).

    Raises:
        DataError: one line per problem, each naming the file: a missing pair, an unreadable
            file, sizes that differ, labels out of range or with gaps (K not given), an image
            smaller than ``min_size``; at most :data:`MAX_PROBLEM_LINES` lines, the rest counted.
    """
    pairs, problems = find_pairs(root)
    good, sizes, top, seen = [], [], 0, set()
    for image_path, label_path in pairs:
        checked = _check_pair(image_path, label_path, num_regions, min_size, max_pixels)
        if isinstance(checked, str):
            problems.append(checked)
            continue
        shape, values = checked
        top = max(top, int(values.max()))
        seen.update(values.tolist())
        good.append((image_path, label_path))
        sizes.append(shape)
    if not problems and not good:
        problems.append(f"{root}: no image/label pairs")
    gaps = label_values_problem(seen, str(root)) if num_regions is None and not problems else None
    if gaps:
        problems.append(gaps)
    if problems:
        raise DataError(problems_message(problems, root))
    return FolderData(Path(root), good, sizes, num_regions or max(2, top + 1), max_pixels)


def _check_pair(image_path: Path, label_path: Path, num_regions: int | None, min_size: int,
                max_pixels: int | None) -> tuple[tuple[int, int], np.ndarray] | str:
    """((H, W), the label values present) of one usable pair, or the line saying what is wrong with it."""
    try:
        shape = read_image(image_path, max_pixels=max_pixels).shape
        labels = read_labels(label_path, max_pixels=max_pixels)
    except ImageReadError as e:
        return str(e)
    if shape != labels.shape:
        return (f"{label_path}: size {labels.shape[1]}x{labels.shape[0]} differs from its image "
                f"{image_path.name} ({shape[1]}x{shape[0]})")
    if min(shape) < min_size:
        return f"{image_path}: {shape[1]}x{shape[0]} is smaller than {min_size}x{min_size}"
    high = int(labels.max())
    if num_regions is not None and high >= num_regions:
        return f"{label_path}: label {high} is out of range for {num_regions} regions (0..{num_regions - 1})"
    return shape, np.unique(labels)


class ImageFolderDataset(Dataset):
    """Random ``image_size`` crops of a validated folder, with flips and 90-degree rotations.

    Two ways to draw, both reproducible:

    * ``sample(batch_size, generator)``: a batch drawn from a ``torch.Generator`` (what the
      training loop uses in place of ``texseg.data.generate``);
    * ``dataset[i]``: one crop of image ``i`` from torch's default RNG: in DataLoader
      workers that RNG is seeded from the loader's ``generator``; with ``num_workers=0`` it
      is the main process's (``torch.manual_seed``).

    Args:
        data: from :func:`validate_folder`, or a folder path (validated here).
        image_size: crop side N (every image must be at least N x N).
        indices: the subset of ``data.pairs`` to use (see :meth:`split`); default all.
        augment: random horizontal/vertical flips and 90-degree rotations.
        color: read the images as RGB (3 channels; grey images repeated, alpha dropped)
            instead of luminance.
    """

    def __init__(
        self,
        data: FolderData | str | os.PathLike[str],
        image_size: int,
        *,
        indices: list[int] | None = None,
        augment: bool = True,
        color: bool = False,
    ) -> None:
        self.image_size = check_int("image_size", image_size, minimum=16)
        if not isinstance(data, FolderData):
            data = validate_folder(data, min_size=image_size)
        small = [data.pairs[i][0] for i, s in enumerate(data.sizes) if min(s) < image_size]
        if small:
            listed = "\n".join(str(p) for p in small[:MAX_PROBLEM_LINES])
            more = f"\n... and {len(small) - MAX_PROBLEM_LINES} more" if len(small) > MAX_PROBLEM_LINES else ""
            raise DataError(f"{len(small)} image(s) smaller than {image_size}x{image_size}:\n{listed}{more}")
        self.data = data
        self.indices = list(range(len(data.pairs))) if indices is None else list(indices)
        self.augment = augment
        if not isinstance(color, bool):
            raise ValueError(f"color must be true or false, got {color!r}")
        self.color = color
        self.channels = 3 if color else 1
        total = sum(h * w * (4 * self.channels + 1) for h, w in data.sizes)  # float32 image + uint8 labels
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = {} if total <= CACHE_BYTES else None

    @property
    def num_regions(self) -> int:
        return self.data.num_regions

    def __len__(self) -> int:
        return len(self.indices)

    def split(self, val_fraction: float, seed: int) -> tuple[ImageFolderDataset, ImageFolderDataset]:
        """(train, validation) datasets over disjoint images, chosen by ``seed``."""
        check_positive("val_fraction", val_fraction)
        if val_fraction >= 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
        if len(self.indices) < 2:
            raise ValueError("val_fraction needs at least 2 images to split")
        order = torch.randperm(len(self.indices), generator=torch.Generator().manual_seed(seed)).tolist()
        n_val = min(len(order) - 1, max(1, round(val_fraction * len(order))))
        pick = [self.indices[i] for i in order]
        return (
            ImageFolderDataset(self.data, self.image_size, indices=sorted(pick[n_val:]), augment=self.augment,
                               color=self.color),
            ImageFolderDataset(self.data, self.image_size, indices=sorted(pick[:n_val]), augment=False,
                               color=self.color),
        )

    def full(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Image ``i`` whole: (H, W) float32 normalised to [0, 1] ((3, H, W) with ``color``), (H, W) int64 labels."""
        j = self.indices[i]
        if self._cache is not None and j in self._cache:
            return self._cache[j]
        image_path, label_path = self.data.pairs[j]
        image = normalize_image(read_image(image_path, max_pixels=self.data.max_pixels, color=self.color))
        if self.color:
            image = np.ascontiguousarray(np.moveaxis(image, -1, 0))  # (H, W, 3) -> (3, H, W)
        item = (
            torch.from_numpy(image),
            torch.from_numpy(read_labels(label_path, max_pixels=self.data.max_pixels).astype(np.int64)),
        )
        if self._cache is not None:
            self._cache[j] = item
        return item

    def _crop(self, i: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        image, labels = self.full(i)
        n = self.image_size
        h, w = image.shape[-2:]
        y = int(torch.randint(0, h - n + 1, (), generator=generator))
        x = int(torch.randint(0, w - n + 1, (), generator=generator))
        planes = image[y : y + n, x : x + n][None] if image.ndim == 2 else image[:, y : y + n, x : x + n]
        # Channels then the labels as the last plane: one flip / rotation moves them together.
        pair = torch.cat([planes, labels[None, y : y + n, x : x + n].to(image.dtype)])
        if self.augment:
            flip_h, flip_v, turns = torch.randint(0, 4, (3,), generator=generator).tolist()
            if flip_h % 2:
                pair = pair.flip(-1)
            if flip_v % 2:
                pair = pair.flip(-2)
            pair = torch.rot90(pair, turns, dims=(-2, -1))
        return pair[:-1].contiguous(), pair[-1:].long()

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One random crop of image ``i``: (C, N, N) float image (C = 3 with ``color``), (1, N, N) int64 labels."""
        return self._crop(i, None)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch like ``texseg.data.generate``: (B, C, N, N) images and (B, 1, N, N) int64 labels.

        Images are drawn uniformly (with replacement), then crop, flips and rotation, all
        from ``generator``.
        """
        check_int("batch_size", batch_size, minimum=1)
        picks = torch.randint(0, len(self), (batch_size,), generator=generator).tolist()
        crops = [self._crop(i, generator) for i in picks]
        return torch.stack([c[0] for c in crops]), torch.stack([c[1] for c in crops])
