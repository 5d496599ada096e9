"""Synthetic texture scenes: a smooth random partition, one Gaussian texture per region.

A scene with K regions is drawn as follows (the notebook's recipe, generalised):

1. partition: K=2 -- one white-noise field smoothed with ``partition_sigma`` and
   thresholded at 0 (region 0 where it is > 0, the notebook's Omega_1); K>2 -- K
   independent smoothed fields and the argmax over them (for K=2 both have the same law);
2. textures: for each region k, white noise smoothed with ``texture_sigmas[k]``;
3. the image takes texture k on region k, is smoothed once more with
   ``smoothing_sigma`` (no jump at the interfaces) and normalised to [0, 1] per image.

Other texture families (``texture``: oriented, powerlaw, bandpass, see
:mod:`texseg.data.textures`; mosaic, see :mod:`texseg.data.mosaic`) and per-region
intensity changes (``means``, ``contrasts``, ``gammas``) replace step 2 only: the noise
is drawn in the same order, so the same seed gives the same partitions for every family.
The default (``texture="gaussian"``, no intensity options) is the notebook's recipe, bit
for bit.

Noise is drawn in that order (partition, texture 0, texture 1, ...), each a
standard-normal (B, 1, N, N) tensor (the partition (B, K, N, N) for K>2), so that for
K=2 the result is the notebook's ``generate_data`` for the same random state.

Colour (``color=True``, images (B, 3, N, N)): each region's texture is made from three
independent noise fields (B, 3, N, N) of its family, then mapped through the region's
random colour transform ``mean + M @ fields`` (:func:`texseg.data.color.color_transforms`):
a mean colour and a 3x3 mixing of 1 to 3 of the fields, drawn per scene and region after
all the noise. So regions differ in texture (their sigmas or families) and in colour; in a
quarter of the scenes all regions share one transform, so colour alone does not give the
answer (equal ``texture_sigmas`` give scenes that differ in colour only). Mosaics read the
textures in colour (grey textures repeated). The final smoothing is per channel and the
normalisation to [0, 1] over all three channels together, so colours keep their ratios.
The grey default is unchanged, bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from texseg._validate import check_choice, check_int, check_positive
from texseg.data import textures as tx
from texseg.data.color import apply_color_transforms
from texseg.data.kernels import gaussian_smooth
from texseg.data.mosaic import SPLITS, fill_mosaic, texture_pool
from texseg.data.textures import FAMILIES, MIXED_FAMILIES, intensity_transform
from texseg.device import check_memory, resolve_device

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class SceneSpec:
    """Parameters of a synthetic texture scene.

    Attributes:
        image_size: N, images are N x N (>= 2).
        partition_sigma: smoothness of the region boundaries, in pixels (> 0).
        texture_sigmas: one texture correlation length per region (K >= 2 entries, > 0);
            region k (label k) carries texture ``texture_sigmas[k]``.
        smoothing_sigma: final smoothing of the whole image (> 0), or None for none.
        texture: family: ``gaussian`` (the notebook's), ``oriented``, ``powerlaw``,
            ``bandpass``, ``mosaic`` (real textures) or ``mixed`` (each scene's family drawn
            at random, seeded, from gaussian, oriented, powerlaw and bandpass, each with its
            own parameters below; train it with ``label_mode="any"``: label k does not mean
            the same thing in two families). K is always len(texture_sigmas);
            the values are the widths of ``gaussian`` and ``oriented`` (short axis) only.
        anisotropy: oriented: long / short axis of the kernel (>= 1).
        orientations: oriented, bandpass: one angle per region in degrees (default
            k * 180 / K for oriented, none (isotropic rings) for bandpass).
        betas: powerlaw: spectral exponent per region (power ~ 1/f^beta; default
            evenly spaced from 1 to 3).
        frequencies: bandpass: centre frequency per region in cycles/pixel (default
            geometric from 0.04 to 0.25).
        bandwidth: bandpass: ring width relative to its frequency (> 0).
        means, contrasts, gammas: per-region intensity mean, standard deviation and
            monotone remap exponent (see :func:`texseg.data.textures.intensity_transform`);
            any of them makes textures standardised per image first.
        textures: mosaic: ``"builtin"`` or a folder of texture images.
        texture_split: mosaic: ``all``, or ``train`` / ``test`` side of a seeded split of
            the texture set (``texture_test_fraction``, ``texture_split_seed``).
        rotate: mosaic: random rotation of each crop.
        max_zoom: mosaic: random zoom of each crop, log-uniform in [1/max_zoom, max_zoom] (> 1).
        color: colour scenes, (B, 3, N, N) images (see the module docstring); False: luminance.
    """
    image_size: int = 128
    partition_sigma: float = 25.0
    texture_sigmas: tuple[float, ...] = (1.0, 0.2)
    smoothing_sigma: float | None = 1.0
    texture: str = "gaussian"
    anisotropy: float = 4.0
    orientations: tuple[float, ...] | None = None
    betas: tuple[float, ...] | None = None
    frequencies: tuple[float, ...] | None = None
    bandwidth: float = 0.25
    means: tuple[float, ...] | None = None
    contrasts: tuple[float, ...] | None = None
    gammas: tuple[float, ...] | None = None
    textures: str | None = None
    texture_split: str = "all"
    texture_test_fraction: float = 0.34
    texture_split_seed: int = 0
    rotate: bool = False
    max_zoom: float | None = None
    color: bool = False

    def __post_init__(self) -> None:
        check_int("image_size", self.image_size, minimum=2)
        check_positive("partition_sigma", self.partition_sigma)
        sigmas = self.texture_sigmas
        if isinstance(sigmas, (str, bytes)) or not hasattr(sigmas, "__len__"):
            raise ValueError(f"texture_sigmas must be a sequence of >= 2 numbers > 0, got {sigmas!r}")
        if len(sigmas) < 2:
            raise ValueError(
                f"texture_sigmas must have one entry per region and K >= 2 regions; got {len(sigmas)}"
            )
        for k, s in enumerate(sigmas):
            check_positive(f"texture_sigmas[{k}]", s)
        # Normalise to a tuple of floats so equal specs compare and serialise equal.
        object.__setattr__(self, "texture_sigmas", tuple(float(s) for s in sigmas))
        if self.smoothing_sigma is not None:
            check_positive("smoothing_sigma", self.smoothing_sigma)
        self._check_textures()

    _PER_REGION = ("orientations", "betas", "frequencies", "means", "contrasts", "gammas")

    def _check_textures(self) -> None:
        check_choice("texture", self.texture, FAMILIES)
        check_positive("anisotropy", self.anisotropy)
        if self.anisotropy < 1:
            raise ValueError(f"anisotropy must be a finite number >= 1, got {self.anisotropy!r}")
        check_positive("bandwidth", self.bandwidth)
        k = self.num_regions
        for name in self._PER_REGION:
            values = getattr(self, name)
            if values is None:
                continue
            if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or len(values) != k:
                raise ValueError(f"{name} must list one number per region ({k}), got {values!r}")
            for i, v in enumerate(values):
                if name in ("orientations", "means"):
                    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                        raise ValueError(f"{name}[{i}] must be a finite number, got {v!r}")
                elif name == "frequencies":
                    check_positive(f"{name}[{i}]", v)
                    if v > 0.5:
                        raise ValueError(f"{name}[{i}] must be <= 0.5 cycles per pixel (Nyquist), got {v!r}")
                else:
                    check_positive(f"{name}[{i}]", v)
            object.__setattr__(self, name, tuple(float(v) for v in values))
        if self.texture == "mosaic" and not self.textures:
            raise ValueError("textures must be 'builtin' or a folder of texture images when texture is 'mosaic'")
        if self.textures is not None and not isinstance(self.textures, str):
            raise ValueError(f"textures must be 'builtin' or a folder path, got {self.textures!r}")
        check_choice("texture_split", self.texture_split, SPLITS)
        check_positive("texture_test_fraction", self.texture_test_fraction)
        if self.texture_test_fraction >= 1:
            raise ValueError(f"texture_test_fraction must be in (0, 1), got {self.texture_test_fraction!r}")
        check_int("texture_split_seed", self.texture_split_seed, minimum=0)
        if not isinstance(self.rotate, bool):
            raise ValueError(f"rotate must be true or false, got {self.rotate!r}")
        if self.max_zoom is not None:
            check_positive("max_zoom", self.max_zoom)
            if self.max_zoom <= 1:
                raise ValueError(f"max_zoom must be a finite number > 1, got {self.max_zoom!r}")
        if not isinstance(self.color, bool):
            raise ValueError(f"color must be true or false, got {self.color!r}")

    @property
    def channels(self) -> int:
        """Image channels: 3 for colour scenes, else 1."""
        return 3 if self.color else 1

    @property
    def has_intensity_changes(self) -> bool:
        """Whether per-region means, contrasts or gammas are set."""
        return any(getattr(self, n) is not None for n in ("means", "contrasts", "gammas"))

    @property
    def num_regions(self) -> int:
        """K, the number of regions (and of label values)."""
        return len(self.texture_sigmas)

    @classmethod
    def notebook(
        cls, image_size: int = 128, sigma1: float = 1.0, sigma2: float = 0.2, sigma: float = 25.0
    ) -> SceneSpec:
        """The notebook's two-region scene: Omega_1 (label 0) has ``sigma1``, Omega_2 ``sigma2``."""
        return cls(image_size, sigma, (sigma1, sigma2), 1.0)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (``from_dict`` inverts it); ``color`` only when True (absent: grey)."""
        d = asdict(self)
        if not self.color:
            del d["color"]  # grey specs keep the dict (and the files that record it) they always had
        d["texture_sigmas"] = list(self.texture_sigmas)
        for name in self._PER_REGION:
            if d[name] is not None:
                d[name] = list(d[name])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SceneSpec:
        """Build a spec from ``to_dict`` output; unknown keys are refused by name."""
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown scene key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
        d = dict(d)
        for name in ("texture_sigmas", *cls._PER_REGION):
            if isinstance(d.get(name), list):
                d[name] = tuple(d[name])
        return cls(**d)


def _check_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype not in _DTYPES.values():
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
    return dtype


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device,
           dtype: torch.dtype) -> torch.Tensor:
    """Standard normal noise from ``generator`` (on its own device) or the global RNG."""
    if generator is None:
        return torch.randn(shape, device=device, dtype=dtype)
    # Draw where the generator lives so a CPU generator gives the same numbers for any
    # target device, then move.
    return torch.randn(shape, generator=generator, device=generator.device, dtype=dtype).to(device)


def _normalize_01(image: torch.Tensor) -> torch.Tensor:
    """Per-image min-max normalisation to [0, 1] (over all channels), in the notebook's order of operations."""
    dims = (-2, -1) if image.shape[1] == 1 else (1, 2, 3)
    image = image - image.amin(dim=dims, keepdim=True)
    return image / image.amax(dim=dims, keepdim=True)


def generate(
    spec: SceneSpec,
    batch_size: int,
    *,
    generator: torch.Generator | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw a batch of scenes.

    Args:
        spec: the scene parameters.
        batch_size: B >= 1.
        generator: a ``torch.Generator`` to draw from; ``None`` uses (and advances) the
            global RNG of ``device``, like the notebook.
        device: where the result lives (None: CPU; 'auto': CUDA if available).
        dtype: torch.float32 or torch.float64.

    Returns:
        image: (B, C, N, N) ``dtype`` in [0, 1] (each image min 0, max 1), C = 3 for colour
        scenes, else 1;
        labels: (B, 1, N, N) int64 in 0..K-1, label k carrying texture ``texture_sigmas[k]``.
    """
    if not isinstance(spec, SceneSpec):
        raise ValueError(f"spec must be a SceneSpec, got {type(spec).__name__}")
    check_int("batch_size", batch_size, minimum=1)
    dev = resolve_device(device)
    dtype = _check_dtype(dtype)
    n = spec.image_size
    check_memory(estimate_memory_bytes(spec, batch_size, dtype), dev,
                 f"generating {batch_size} images of {n}x{n}")
    labels = _partition(spec, batch_size, generator, dev, dtype)
    if spec.texture == "mosaic":
        image = _mosaic_image(spec, labels, generator, dev, dtype)
    else:
        image = _texture_image(spec, labels, generator, dev, dtype)
    if spec.smoothing_sigma is not None:
        image = gaussian_smooth(image, spec.smoothing_sigma)
    return _normalize_01(image), labels


def _partition(spec: SceneSpec, batch_size: int, generator: torch.Generator | None, dev: torch.device,
               dtype: torch.dtype) -> torch.Tensor:
    """Step 1: (B, 1, N, N) int64 labels, from the first noise drawn."""
    n, k = spec.image_size, spec.num_regions
    if k == 2:
        field_ = gaussian_smooth(_randn((batch_size, 1, n, n), generator, dev, dtype), spec.partition_sigma)
        return (field_ <= 0).long()  # region 0 (Omega_1) where the field is > 0
    fields = gaussian_smooth(_randn((batch_size, k, n, n), generator, dev, dtype), spec.partition_sigma)
    return fields.argmax(dim=1, keepdim=True)


def _mosaic_image(spec: SceneSpec, labels: torch.Tensor, generator: torch.Generator | None, dev: torch.device,
                  dtype: torch.dtype) -> torch.Tensor:
    """Step 2 for mosaics: (B, C, N, N) crops of real textures, one texture per region."""
    pool = texture_pool(spec.textures, spec.texture_split, spec.texture_test_fraction, spec.texture_split_seed,
                        color=spec.color)
    image = fill_mosaic(labels, spec.num_regions, pool, generator, rotate=spec.rotate, max_zoom=spec.max_zoom)
    image = image.to(dev, dtype)
    return _intensity_by_region(spec, labels, image) if spec.has_intensity_changes else image


def _texture_image(spec: SceneSpec, labels: torch.Tensor, generator: torch.Generator | None, dev: torch.device,
                   dtype: torch.dtype) -> torch.Tensor:
    """Step 2: texture k on region k, composed in place of a K-way mask product: (B, C, N, N)."""
    b, _, n, _ = labels.shape
    shape = (b, spec.channels, n, n)
    image = torch.zeros(shape, device=dev, dtype=dtype)
    families = _scene_families(spec, b, generator)
    for region in range(spec.num_regions):
        noise = _randn(shape, generator, dev, dtype)
        if families is None:
            texture = region_texture(spec, region, noise)
        else:  # mixed: each scene's texture from its own family, same noise and partition
            texture = torch.empty_like(noise)
            for f, family in enumerate(MIXED_FAMILIES):
                sel = (families == f).to(dev)
                if bool(sel.any()):
                    texture[sel] = region_texture(replace(spec, texture=family), region, noise[sel])
        image = torch.where(labels == region, texture, image)
    return apply_color_transforms(image, labels, spec.num_regions, generator) if spec.color else image


def _scene_families(spec: SceneSpec, batch_size: int, generator: torch.Generator | None) -> torch.Tensor | None:
    """``texture="mixed"``: (B,) indices into MIXED_FAMILIES, drawn after the partition; else None."""
    if spec.texture != "mixed":
        return None
    dev = generator.device if generator is not None else None
    return torch.randint(len(MIXED_FAMILIES), (batch_size,), generator=generator, device=dev).cpu()


def region_texture(spec: SceneSpec, region: int, noise: torch.Tensor) -> torch.Tensor:
    """The texture of ``region`` made from standard-normal ``noise`` (B, C, N, N), each channel on its own.

    ``gaussian`` without intensity options is the notebook's smoothed noise, unchanged;
    the other families are spectral filters (:mod:`texseg.data.textures`), standardised.
    """
    k, n = spec.num_regions, noise.shape[-1]
    kw = {"device": noise.device, "dtype": torch.float64 if noise.dtype == torch.float64 else torch.float32}
    if spec.texture == "gaussian":
        texture = gaussian_smooth(noise, spec.texture_sigmas[region])
        if not spec.has_intensity_changes:
            return texture
    elif spec.texture == "oriented":
        angle = spec.orientations[region] if spec.orientations else region * 180 / k
        texture = tx.filter_noise(noise, tx.oriented_amplitude(n, spec.texture_sigmas[region], spec.anisotropy,
                                                                angle, **kw))
    elif spec.texture == "powerlaw":
        beta = spec.betas[region] if spec.betas else 1 + 2 * region / (k - 1)
        texture = tx.filter_noise(noise, tx.powerlaw_amplitude(n, beta, **kw))
    else:  # bandpass
        freq = spec.frequencies[region] if spec.frequencies else 0.04 * (0.25 / 0.04) ** (region / (k - 1))
        angle = spec.orientations[region] if spec.orientations else None
        texture = tx.filter_noise(noise, tx.bandpass_amplitude(n, freq, spec.bandwidth, angle, **kw))
    return _apply_intensity(spec, region, tx.standardize(texture))


def _apply_intensity(spec: SceneSpec, region: int, texture: torch.Tensor) -> torch.Tensor:
    return intensity_transform(
        texture,
        mean=spec.means[region] if spec.means else 0.0,
        contrast=spec.contrasts[region] if spec.contrasts else 1.0,
        gamma=spec.gammas[region] if spec.gammas else None,
    )


def _intensity_by_region(spec: SceneSpec, labels: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Mosaics: standardise each region's pixels, then apply its intensity change."""
    out = image.clone()
    for region in range(spec.num_regions):
        sel = (labels == region).expand_as(image)  # colour: the region's pixels of all channels together
        for i in range(image.shape[0]):
            values = image[i][sel[i]]
            if values.numel() > 1:
                z = (values - values.mean()) / values.std().clamp(min=1e-12)
                out[i][sel[i]] = _apply_intensity(spec, region, z[None]).flatten()
    return out


def generate_data(
    batch_size: int,
    image_size: int = 128,
    sigma1: float = 1.0,
    sigma2: float = 0.2,
    sigma: float = 25.0,
    *,
    generator: torch.Generator | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The notebook's ``generate_data``, same signature, defaults and outputs, fast.

    After ``torch.manual_seed(s)`` (no ``generator``) it returns the notebook's images
    for seed ``s``; with ``generator=torch.Generator().manual_seed(s)`` the same images
    without touching the global RNG.

    Args:
        batch_size: B >= 1.
        image_size: N >= 2.
        sigma1: texture width in Omega_1 (> 0).
        sigma2: texture width in Omega_2 (> 0).
        sigma: partition smoothness (> 0).
        generator, device, dtype: as in :func:`generate`.

    Returns:
        image: (B, 1, N, N) in [0, 1]; mask: (B, 1, N, N) ``dtype``, 1.0 on Omega_1.
    """
    spec = SceneSpec.notebook(image_size, sigma1, sigma2, sigma)
    image, labels = generate(spec, batch_size, generator=generator, device=device, dtype=dtype)
    return image, (labels == 0).to(dtype)


def estimate_memory_bytes(spec: SceneSpec, batch_size: int, dtype: torch.dtype = torch.float32) -> int:
    """Approximate peak memory of :func:`generate` in bytes.

    A handful of (B, N, N) float buffers live at once (noise, smoothed field, matmul
    temporaries, image), the partition fields (K of them for K > 2) and int64 labels;
    plus the N x N smoothing matrices.
    """
    itemsize = torch.empty((), dtype=dtype).element_size()
    pixels = batch_size * spec.image_size**2
    fields = (spec.num_regions if spec.num_regions > 2 else 1) + 5 * spec.channels
    return int(pixels * (fields * itemsize + 8) + 4 * spec.image_size**2 * itemsize)


def target_from_labels(labels: torch.Tensor, num_regions: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The training/evaluation target for a model of ``num_regions`` regions.

    Two regions: the notebook's mask, 1.0 on Omega_1 (label 0) -- what a one-logit model
    predicts. K > 2: the label map itself.

    Args:
        labels: (B, 1, N, N) int64 region labels.
        num_regions: K.
        dtype: float dtype of the binary mask.
    """
    return (labels == 0).to(dtype) if num_regions == 2 else labels


__all__ = ["SceneSpec", "generate", "generate_data", "estimate_memory_bytes",
           "target_from_labels"]
