"""Procedural texture collages: many texture families, random partitions, K from 2 to 8.

This is the training distribution of texseg's texture-agnostic models (``texseg
train-general``): a network trained on it must learn *what makes two textures
different*, not a fixed set of textures, so every scene draws new textures with new
parameters. A scene is made as follows, everything drawn from one ``torch.Generator``
(a seed reproduces it):

1. partition: K regions (K drawn from ``min_regions..max_regions``) from one of
   ``blobs`` (argmax of K smoothed noise fields, the generator's K-region partition, at a
   random scale), ``voronoi`` (nearest of K random seeds) or ``warped`` (Voronoi cells
   whose coordinates are displaced by smooth noise: curved boundaries); regions smaller
   than ``min_area`` of the image are merged away, labels are renumbered 0..K'-1;
2. textures: each region gets a texture of a random family (:data:`FAMILIES`, minus
   ``exclude``) with random parameters, then a random monotone intensity map (gamma of the
   normal CDF), contrast and mean -- sometimes two regions share a family with other
   parameters, sometimes they share intensity statistics, so that only texture tells;
   with ``nonstationary``, some regions are not stationary, as in photographs: their
   texture is seen in perspective (its scale and orientation drift smoothly across the
   image) and shaded (a smooth gain field), so that gradual change is not a boundary;
3. the image: the textures composed by region, an optional blur, sensor noise and a smooth
   illumination gradient, normalised to [0, 1] per image.

Families (parameters drawn per region):

=========  ==================================================================
gaussian   white noise smoothed with a Gaussian (the notebook's family), width 0.3-6 px
oriented   anisotropic Gaussian noise at a random angle (streaks)
powerlaw   1/f^beta noise (fractal), beta 0.5-3.5
bandpass   a ring of the spectrum (isotropic or oriented): Gabor-like noise
binary     a smooth noise field thresholded at a random quantile (two-tone blobs)
grating    a sine or square wave at a random orientation, frequency and noise level
dots       disks of random radius at random (Poisson) positions
cells      Worley (cellular) noise: distance to the nearest random point, or its edges
ridged     1 - |bandpass noise|: ridges and veins
bricks     a rectangular lattice (bricks or checkers) with mortar, jitter and rotation
warped     a smooth field sampled at coordinates displaced by another (marble-like)
product    a random family modulated by another (composite textures)
=========  ==================================================================
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree

from texseg._validate import check_int
from texseg.data import textures as tx
from texseg.data.color import apply_color_transforms
from texseg.data.kernels import gaussian_smooth

__all__ = ["FAMILIES", "PARTITIONS", "CollageSpec", "generate_collage", "family_texture"]

FAMILIES = ("gaussian", "oriented", "powerlaw", "bandpass", "binary", "grating", "dots", "cells", "ridged",
            "bricks", "warped", "product")
PARTITIONS = ("blobs", "voronoi", "warped")


@dataclass(frozen=True)
class CollageSpec:
    """What :func:`generate_collage` draws.

    Attributes:
        image_size: N, images are N x N (>= 16).
        min_regions, max_regions: K is drawn uniformly in this range (2 <= min <= max <= 8).
        families: the texture families to draw from (default all of :data:`FAMILIES`).
        exclude: families never drawn (e.g. one held out for validation).
        partitions: partition kinds to draw from (:data:`PARTITIONS`).
        min_area: a region smaller than this fraction of the image is merged away.
        augment: blur, noise and illumination changes of the whole image.
        gaussian_scenes: the fraction of scenes drawn as the notebook draws them instead:
            every region white noise smoothed with its own width (the widths a geometric
            progression of ratio 1.2-2.5 from 0.2-3 px, in random order), not standardised,
            the whole image smoothed with sigma 1 -- textures that differ only a little.
        color: (B, 3, N, N) colour collages: each region three draws of its family mapped
            through a random per-region colour transform (:mod:`texseg.data.color`; not for
            ``gaussian_scenes``, which stay grey, repeated to three channels).
        nonstationary: the fraction of regions whose texture drifts as in a photograph: seen
            through a random perspective (local scale changing up to ~1.6x across the image)
            and shaded by a smooth gain field. 0 (the default) draws exactly what earlier
            versions drew for a seed.
    """

    image_size: int = 128
    min_regions: int = 2
    max_regions: int = 5
    families: tuple[str, ...] = FAMILIES
    exclude: tuple[str, ...] = ()
    partitions: tuple[str, ...] = PARTITIONS
    min_area: float = 0.03
    augment: bool = True
    gaussian_scenes: float = 0.0
    color: bool = False
    nonstationary: float = 0.0

    def __post_init__(self) -> None:
        check_int("image_size", self.image_size, minimum=16)
        check_int("min_regions", self.min_regions, minimum=2, maximum=8)
        check_int("max_regions", self.max_regions, minimum=self.min_regions, maximum=8)
        for name, allowed in (("families", FAMILIES), ("exclude", FAMILIES), ("partitions", PARTITIONS)):
            values = getattr(self, name)
            if isinstance(values, str) or not isinstance(values, Sequence):
                raise ValueError(f"{name} must be a list of names from {', '.join(allowed)}, got {values!r}")
            bad = [v for v in values if v not in allowed]
            if bad:
                raise ValueError(f"{name}: unknown {bad[0]!r}; allowed: {', '.join(allowed)}")
            object.__setattr__(self, name, tuple(values))
        if not self.drawn_families:
            raise ValueError("families: every family is excluded; keep at least one")
        if not self.partitions:
            raise ValueError(f"partitions must name at least one of {', '.join(PARTITIONS)}")
        if not 0 <= self.min_area < 0.2:
            raise ValueError(f"min_area must be in [0, 0.2), got {self.min_area!r}")
        if not 0 <= self.gaussian_scenes <= 1:
            raise ValueError(f"gaussian_scenes must be a fraction in [0, 1], got {self.gaussian_scenes!r}")
        if not 0 <= self.nonstationary <= 1:
            raise ValueError(f"nonstationary must be a fraction in [0, 1], got {self.nonstationary!r}")
        if not isinstance(self.color, bool):
            raise ValueError(f"color must be true or false, got {self.color!r}")

    @property
    def drawn_families(self) -> tuple[str, ...]:
        """The families scenes are drawn from (``families`` minus ``exclude``)."""
        return tuple(f for f in self.families if f not in self.exclude)


# ---------------------------------------------------------------- random draws

class _Draw:
    """Scalar draws from a ``torch.Generator`` (CPU), so one seed fixes a whole scene."""

    def __init__(self, generator: torch.Generator) -> None:
        self.g = generator

    def uniform(self, lo: float = 0.0, hi: float = 1.0) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=self.g))

    def log_uniform(self, lo: float, hi: float) -> float:
        return math.exp(self.uniform(math.log(lo), math.log(hi)))

    def integer(self, lo: int, hi: int) -> int:
        """Uniform in lo..hi inclusive."""
        return int(torch.randint(lo, hi + 1, (), generator=self.g))

    def chance(self, p: float) -> bool:
        return self.uniform() < p

    def choice(self, options: Sequence[str]) -> str:
        return options[self.integer(0, len(options) - 1)]

    def normal(self, *shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=self.g)

    def rand(self, *shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=self.g)


def _grid(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel coordinates (y, x), each (N, N) float32."""
    r = torch.arange(n, dtype=torch.float32)
    return torch.meshgrid(r, r, indexing="ij")


def _smooth_field(d: _Draw, n: int, sigma: float) -> torch.Tensor:
    """Standardised smooth Gaussian noise (N, N), correlation length ``sigma`` px."""
    return tx.standardize(gaussian_smooth(d.normal(1, 1, n, n), sigma))[0, 0]


# ---------------------------------------------------------------- texture families

def _spectral(d: _Draw, n: int, amplitude: torch.Tensor) -> torch.Tensor:
    return tx.filter_noise(d.normal(n, n), amplitude)


def _gaussian(d: _Draw, n: int) -> torch.Tensor:
    return gaussian_smooth(d.normal(1, 1, n, n), d.log_uniform(0.3, 6.0))[0, 0]


def _oriented(d: _Draw, n: int) -> torch.Tensor:
    amp = tx.oriented_amplitude(n, d.log_uniform(0.4, 3.0), d.log_uniform(2.0, 10.0), d.uniform(0, 180))
    return _spectral(d, n, amp)


def _powerlaw(d: _Draw, n: int, max_beta: float = 3.5) -> torch.Tensor:
    return _spectral(d, n, tx.powerlaw_amplitude(n, d.uniform(0.5, max_beta)))


def _bandpass(d: _Draw, n: int) -> torch.Tensor:
    angle = d.uniform(0, 180) if d.chance(0.5) else None
    return _spectral(d, n, tx.bandpass_amplitude(n, d.log_uniform(0.03, 0.35), d.uniform(0.1, 0.5), angle))


def _binary(d: _Draw, n: int) -> torch.Tensor:
    # No steep power law here: its blobs would be as large as the regions, whose texture would vanish.
    base = _powerlaw(d, n, 2.2) if d.chance(0.3) else _gaussian(d, n) if d.chance(0.5) else _oriented(d, n)
    q = torch.quantile(base.flatten()[::7], d.uniform(0.2, 0.8))
    return (base > q).float()


def _grating(d: _Draw, n: int) -> torch.Tensor:
    y, x = _grid(n)
    a, f = math.radians(d.uniform(0, 180)), d.log_uniform(0.02, 0.3)
    wave = torch.sin(2 * math.pi * f * (x * math.cos(a) + y * math.sin(a)) + d.uniform(0, 2 * math.pi))
    if d.chance(0.4):
        wave = torch.sign(wave)
    if d.chance(0.5):  # a wobbly grating: phase noise
        wave = torch.sin(torch.asin(wave.clamp(-1, 1)) + d.uniform(0.3, 2.0) * _smooth_field(d, n, d.uniform(4, 16)))
    return wave + d.uniform(0.0, 0.6) * d.normal(n, n)


def _dots(d: _Draw, n: int) -> torch.Tensor:
    radius = d.log_uniform(1.0, 6.0)
    density = d.uniform(0.1, 0.6) / (math.pi * radius**2)  # fraction of the area covered (before overlaps)
    impulses = (d.rand(n, n) < density).float()
    if d.chance(0.5):  # dots of varying brightness
        impulses = impulses * (0.5 + d.rand(n, n))
    y, x = _grid(n)
    r = torch.sqrt(torch.minimum(y, n - y) ** 2 + torch.minimum(x, n - x) ** 2)  # periodic distance to (0, 0)
    disk = (r <= radius).float() if d.chance(0.6) else torch.exp(-(r**2) / (2 * (radius / 1.5) ** 2))
    out = torch.fft.irfft2(torch.fft.rfft2(impulses) * torch.fft.rfft2(disk), s=(n, n))
    return out.clamp(max=1.5 if d.chance(0.5) else 1e9)


def _cells(d: _Draw, n: int) -> torch.Tensor:
    spacing = d.log_uniform(4.0, 24.0)
    count = max(4, min(1500, int((n / spacing) ** 2)))
    points = (d.rand(count, 2) * n).double().numpy() % n
    y, x = _grid(n)
    pixels = torch.stack([y.flatten(), x.flatten()], 1).double().numpy()
    # Periodic distances (boxsize): the texture has no seam at the image's edges.
    two = torch.from_numpy(cKDTree(points, boxsize=n).query(pixels, k=2)[0]).float()
    kind = d.integer(0, 2)
    out = two[:, 0] if kind == 0 else two[:, 1] - two[:, 0] if kind == 1 else (two[:, 1] - two[:, 0] < 1.5).float()
    return out.reshape(n, n)


def _ridged(d: _Draw, n: int) -> torch.Tensor:
    base = tx.standardize(_bandpass(d, n) if d.chance(0.6) else _powerlaw(d, n))
    return (1 - base.abs()).clamp(min=0) ** d.uniform(1.0, 3.0)


def _bricks(d: _Draw, n: int) -> torch.Tensor:
    y, x = _grid(n)
    a = math.radians(d.uniform(0, 180))
    u, v = x * math.cos(a) + y * math.sin(a), -x * math.sin(a) + y * math.cos(a)
    h = d.log_uniform(3.0, 20.0)
    w = h * d.log_uniform(1.0, 3.0)
    if d.chance(0.35):  # checkers
        return ((torch.floor(u / w) + torch.floor(v / h)) % 2).float()
    row = torch.floor(v / h)
    u = u + (row % 2) * w * d.uniform(0.3, 0.7)
    mortar = d.uniform(0.08, 0.25)
    fu, fv = torch.frac(u / w), torch.frac(v / h)
    out = ((fu > mortar * h / w) & (fv > mortar)).float()
    if d.chance(0.5):  # bricks of varying brightness
        ids = (torch.floor(u / w) * 7919 + row * 104729) % 997
        out = out * (0.6 + 0.4 * torch.frac(ids * 0.618))
    return out


def _warped(d: _Draw, n: int) -> torch.Tensor:
    base = _powerlaw(d, n) if d.chance(0.5) else _grating(d, n)
    strength = d.uniform(2.0, 12.0) / n * 2
    scale = d.uniform(6.0, 30.0)
    dy, dx = _smooth_field(d, n, scale), _smooth_field(d, n, scale)
    y, x = _grid(n)
    grid = torch.stack([(2 * x + 1) / n - 1 + strength * dx, (2 * y + 1) / n - 1 + strength * dy], -1)
    return F.grid_sample(base[None, None], grid[None], mode="bilinear", padding_mode="reflection",
                         align_corners=False)[0, 0]


def _product(d: _Draw, n: int) -> torch.Tensor:
    simple = ("gaussian", "oriented", "powerlaw", "bandpass", "grating", "binary", "dots", "bricks")
    a = tx.standardize(_FAMILY_FUNCTIONS[d.choice(simple)](d, n))
    b = _FAMILY_FUNCTIONS[d.choice(simple)](d, n)
    b = (b - b.min()) / (b.max() - b.min()).clamp(min=1e-6)
    return a * (0.3 + b)


def _perspective(d: _Draw, texture: torch.Tensor) -> torch.Tensor:
    """``texture`` (C, N, N) seen in a random perspective: a homography maps the image onto a
    quadrilateral inside it (each corner moved inwards by up to 35%), so the local scale and
    orientation change smoothly across the image and no pixel is sampled outside."""
    n = texture.shape[-1]
    corners = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    inward = -corners * d.rand(4, 2) * 0.35
    h = _homography(corners, corners + inward)
    y, x = _grid(n)
    points = torch.stack([(2 * x + 1) / n - 1, (2 * y + 1) / n - 1, torch.ones(n, n)], -1) @ h.T
    grid = points[..., :2] / points[..., 2:]
    return F.grid_sample(texture[None], grid[None], mode="bilinear", padding_mode="reflection",
                         align_corners=False)[0]


def _homography(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The 3x3 projective map taking the 4 (x, y) points of ``source`` to those of ``target``."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(source.tolist(), target.tolist(), strict=True):
        rows += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
        rhs += [u, v]
    solution = torch.linalg.solve(torch.tensor(rows, dtype=torch.float64), torch.tensor(rhs, dtype=torch.float64))
    return torch.cat([solution, torch.ones(1, dtype=torch.float64)]).reshape(3, 3).float()


def _shade(d: _Draw, texture: torch.Tensor) -> torch.Tensor:
    """``texture`` (C, N, N, standardised) lit unevenly: a smooth gain of its contrast (up to
    about x/÷ 1.6) and a smooth shift of its brightness (up to about half its deviation)."""
    n = texture.shape[-1]
    gain = torch.exp(d.uniform(0.1, 0.5) * _smooth_field(d, n, n * d.uniform(0.2, 0.6)))
    return texture * gain + d.uniform(0.0, 0.5) * _smooth_field(d, n, n * d.uniform(0.2, 0.6))


_FAMILY_FUNCTIONS: dict[str, Callable[[_Draw, int], torch.Tensor]] = {
    "gaussian": _gaussian, "oriented": _oriented, "powerlaw": _powerlaw, "bandpass": _bandpass,
    "binary": _binary, "grating": _grating, "dots": _dots, "cells": _cells, "ridged": _ridged,
    "bricks": _bricks, "warped": _warped, "product": _product,
}


def family_texture(family: str, n: int, generator: torch.Generator) -> torch.Tensor:
    """One standardised N x N texture of ``family`` with parameters drawn from ``generator``.

    Returns:
        (N, N) float32, mean 0 and standard deviation 1 (a constant texture stays 0).
    """
    if family not in _FAMILY_FUNCTIONS:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")
    return tx.standardize(_FAMILY_FUNCTIONS[family](_Draw(generator), n).float())


# ---------------------------------------------------------------- partitions

def _partition(d: _Draw, n: int, k: int, kind: str) -> torch.Tensor:
    """(N, N) int64 labels in 0..k-1 (some labels may be missing)."""
    if kind == "blobs":
        sigma = n * d.log_uniform(0.06, 0.3)
        fields = gaussian_smooth(d.normal(1, k, n, n), sigma)[0]
        return fields.argmax(0)
    y, x = _grid(n)
    if kind == "warped":
        strength, scale = n * d.uniform(0.03, 0.15), n * d.uniform(0.08, 0.3)
        y = y + strength * _smooth_field(d, n, scale)
        x = x + strength * _smooth_field(d, n, scale)
    seeds = d.rand(k, 2) * n
    # Anisotropic weights give elongated cells, not only round ones.
    weights = 0.5 + d.rand(k, 2)
    dist = ((y[None] - seeds[:, 0, None, None]) ** 2 * weights[:, 0, None, None]
            + (x[None] - seeds[:, 1, None, None]) ** 2 * weights[:, 1, None, None])
    return dist.argmin(0)


def _merge_small(labels: torch.Tensor, min_pixels: int) -> torch.Tensor:
    """Give pixels of regions under ``min_pixels`` to the largest region; renumber 0..K'-1."""
    counts = torch.bincount(labels.flatten(), minlength=int(labels.max()) + 1)
    keep = counts >= max(min_pixels, 1)
    if not bool(keep.any()):
        keep[counts.argmax()] = True
    labels = torch.where(keep[labels], labels, counts.argmax())
    remap = torch.cumsum(keep.long(), 0) - 1
    return remap[labels]


# ---------------------------------------------------------------- scenes

def _intensity(d: _Draw, texture: torch.Tensor) -> torch.Tensor:
    """A random monotone intensity map, contrast and mean for one region's texture."""
    if d.chance(0.5):
        texture = tx.intensity_transform(texture, gamma=d.log_uniform(0.3, 3.0))
    if d.chance(0.15):
        texture = -texture
    return d.uniform(-1.0, 1.0) + d.log_uniform(0.3, 2.0) * texture


def _scene(d: _Draw, spec: CollageSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """One collage: (C, N, N) image in [0, 1] (C = 3 with ``spec.color``), (N, N) labels."""
    n = spec.image_size
    k = d.integer(spec.min_regions, spec.max_regions)
    labels = _merge_small(_partition(d, n, k, d.choice(spec.partitions)), int(spec.min_area * n * n))
    k = int(labels.max()) + 1
    if spec.gaussian_scenes and d.chance(spec.gaussian_scenes):
        grey = _gaussian_scene(d, labels, k)
        return (grey.expand(3, n, n).clone() if spec.color else grey[None]), labels
    image = _regions(d, spec, labels, k)
    if spec.augment:
        image = _augment(d, image)
    image = image - image.min()
    return image / image.max().clamp(min=1e-12), labels


def _regions(d: _Draw, spec: CollageSpec, labels: torch.Tensor, k: int) -> torch.Tensor:
    """(C, N, N): each region's texture, intensity (and colour) change, not yet normalised."""
    n, families = spec.image_size, spec.drawn_families
    channels = 3 if spec.color else 1
    image = torch.zeros(channels, n, n)
    shared = (d.uniform(-1, 1), d.log_uniform(0.3, 2.0)) if d.chance(0.3) else None
    same_family = d.choice(families) if d.chance(0.25) else None
    for region in range(k):
        family = same_family or d.choice(families)
        fields = []
        for _ in range(channels):  # colour: three independent fields of the region's family
            texture = family_texture(family, n, d.g)
            fields.append(tx.standardize(_intensity(d, texture)))
        mean, contrast = shared or (d.uniform(-1.0, 1.0), d.log_uniform(0.3, 2.0))
        texture = torch.stack(fields)
        # Only drawn when asked for, so that nonstationary = 0 keeps every seed's scenes.
        if spec.nonstationary and d.chance(spec.nonstationary):
            texture = _shade(d, _perspective(d, texture))
        image = torch.where(labels == region, mean + contrast * texture, image)
    if spec.color:
        image = apply_color_transforms(image[None], labels[None, None], k, d.g)[0]
    return image


def _augment(d: _Draw, image: torch.Tensor) -> torch.Tensor:
    """Blur, illumination gradient and noise of a whole (C, N, N) image, each at random."""
    n = image.shape[-1]
    if d.chance(0.5):
        image = gaussian_smooth(image[None], d.uniform(0.4, 1.5))[0]
    if d.chance(0.4):  # illumination: a smooth multiplicative and additive gradient
        y, x = _grid(n)
        a = math.radians(d.uniform(0, 360))
        ramp = ((x * math.cos(a) + y * math.sin(a)) / n - 0.5) * d.uniform(0.2, 1.5)
        image = image * (1 + 0.3 * ramp) + ramp
    if d.chance(0.5):
        image = image + d.log_uniform(0.01, 0.3) * image.std() * d.normal(*image.shape)
    return image


def _gaussian_scene(d: _Draw, labels: torch.Tensor, k: int) -> torch.Tensor:
    """The notebook's kind of scene on ``labels``: smoothed noise of K close widths, smoothed, in [0, 1]."""
    n = labels.shape[-1]
    ratio, first = d.uniform(1.2, 2.5), d.log_uniform(0.2, 3.0)
    widths = [first * ratio**i for i in range(k)]
    order = torch.randperm(k, generator=d.g).tolist()
    image = torch.zeros(n, n)
    for region in range(k):
        texture = gaussian_smooth(d.normal(1, 1, n, n), widths[order[region]])[0, 0]
        image = torch.where(labels == region, texture, image)
    image = gaussian_smooth(image[None, None], 1.0)[0, 0]
    image = image - image.min()
    return image / image.max().clamp(min=1e-12)


def generate_collage(spec: CollageSpec, batch_size: int, *, generator: torch.Generator
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw a batch of procedural texture collages (on the CPU).

    Args:
        spec: what to draw.
        batch_size: B >= 1.
        generator: a CPU ``torch.Generator``; the same state gives the same scenes.

    Returns:
        images (B, C, N, N) float32 in [0, 1] (each min 0, max 1; C = 3 with ``spec.color``, else 1);
        labels (B, 1, N, N)
        int64 in 0..K_b-1, K_b the regions of scene b (from ``min_regions`` to ``max_regions``,
        fewer when a region was too small).
    """
    if not isinstance(spec, CollageSpec):
        raise ValueError(f"spec must be a CollageSpec, got {type(spec).__name__}")
    check_int("batch_size", batch_size, minimum=1)
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise ValueError("generator must be a CPU torch.Generator")
    d = _Draw(generator)
    scenes = [_scene(d, spec) for _ in range(batch_size)]
    images = torch.stack([s[0] for s in scenes])
    labels = torch.stack([s[1] for s in scenes])[:, None]
    return images, labels
