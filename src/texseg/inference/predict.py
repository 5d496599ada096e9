"""Segmenting images of any size: arrays, PIL images and files, whole or tiled.

``predict(model, x)`` is the one entry point from Python:

* a torch tensor (B, 1, H, W) or (H, W) is used as it is (values like the training
  data), run through :func:`texseg.inference.inferer.forward` (the one forward pass);
* a numpy array (H, W) or (H, W, C), a PIL image or a path to an image file is turned
  into luminance (RGB for a colour model: ``model.in_channels == 3``) and min-max
  normalised as a whole (see :mod:`texseg.inference.io`),
  optionally resampled by ``scale``, predicted whole or by blended tiles
  (:mod:`texseg.inference.tiling`), and the probabilities are resampled back to the
  input's size.

``predict_file`` does the same for one file and writes ``NAME.mask.png``,
``NAME.prob.npy`` and ``NAME.overlay.png``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from skimage.segmentation import find_boundaries
from torch import nn

from texseg._validate import check_choice, check_int, check_positive
from texseg.data.export import write_label_png
from texseg.device import check_memory
from texseg.images import (
    MAX_PIXELS,
    MIN_SIZE,
    check_layout,
    color_for_channels,
    image_planes,
    normalize_image,
    read_image,
    read_layout,
    to_color,
    to_luminance,
)
from texseg.inference.embedding import is_embedding_model, segment_embedded
from texseg.inference.fusion import model_cache
from texseg.inference.gabor import gabor_bank
from texseg.inference.grouping import GroupOptions
from texseg.inference.inferer import PRECISIONS, forward_probs, model_device
from texseg.inference.tiling import WINDOWS, predict_tiled
from texseg.io import atomic_path
from texseg.signals import stop_point

__all__ = [
    "DEFAULT_OVERLAP",
    "DEFAULT_TILE",
    "OUTPUT_IMAGE_SUFFIXES",
    "WHOLE_IMAGE_PIXELS",
    "PredictResult",
    "PredictSettings",
    "check_predict_memory",
    "estimate_predict_bytes",
    "labels_from_probs",
    "output_paths",
    "overlay_image",
    "predict",
    "predict_file",
    "predict_image",
    "write_overlay",
]

#: With ``tile=None`` an image of at most this many pixels is predicted in one pass.
WHOLE_IMAGE_PIXELS = 1024 * 1024
#: Window side used when ``tile=None`` and the image is larger than WHOLE_IMAGE_PIXELS.
DEFAULT_TILE = 512
DEFAULT_OVERLAP = 0.25
# Region tints of the overlay (tab10) and the boundary colour.
_PALETTE = np.array([[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
                     [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207]],
                    dtype=np.uint16)
_BOUNDARY = np.array([255, 255, 0], dtype=np.uint8)
# Rows per block when labels and the overlay are made: bounds their temporaries for any image size.
_ROWS = 512
# The overlay's blocks hold a few (rows, W, 3) float32 temporaries: fewer rows.
_OVERLAY_ROWS = 128


@dataclass(frozen=True)
class PredictSettings:
    """How :func:`predict_file` (and ``texseg predict``) segments an image; checked when made.

    Attributes:
        tile: None: whole image up to :data:`WHOLE_IMAGE_PIXELS`, else windows of
            :data:`DEFAULT_TILE`; N >= 16: windows of N when the image is larger; 0: always whole.
        overlap: window overlap fraction in [0, 0.9].
        scale: resample the image by this factor before predicting (> 0); results are at the input's size.
        batch_size: windows per forward pass (>= 1).
        precision: ``auto`` (bf16 where the CPU or GPU has native bf16, else fp32), ``fp32`` or ``bf16``.
        window: blending window of the tiles, ``gaussian`` or ``ramp``.
        overwrite: replace existing outputs (default: keep them).
        max_pixels: the pixel limit of an input file (None: none; see :data:`texseg.images.MAX_PIXELS`).
    """

    tile: int | None = None
    overlap: float = DEFAULT_OVERLAP
    scale: float = 1.0
    batch_size: int = 1
    precision: str = "auto"
    window: str = "gaussian"
    overwrite: bool = False
    max_pixels: int | None = MAX_PIXELS

    def __post_init__(self) -> None:
        if self.tile is not None and self.tile != 0:
            check_int("tile", self.tile, minimum=16)
        check_positive("overlap", self.overlap, allow_zero=True)
        if self.overlap > 0.9:
            raise ValueError(f"overlap must be a fraction in [0, 0.9], got {self.overlap!r}")
        check_positive("scale", self.scale)
        check_int("batch_size", self.batch_size, minimum=1)
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("window", self.window, WINDOWS)
        if self.max_pixels is not None:
            check_int("max_pixels", self.max_pixels, minimum=1)


def _predict_tensor(model: nn.Module, images: torch.Tensor, batch_size: int, precision: str = "auto") -> torch.Tensor:
    """The tensor path: (B, C, H, W), (C, H, W) or (H, W) in, (B, C, H, W) probabilities out (on the images' device)."""
    if images.ndim == 2:
        images = images[None, None]
    elif images.ndim == 3:
        images = images[None]
    out = [forward_probs(model, images[s:s + batch_size], precision).to(images.device)
           for s in range(0, images.shape[0], batch_size)]
    return out[0] if len(out) == 1 else torch.cat(out)


def model_color(model: nn.Module) -> bool:
    """Whether ``model`` reads images in colour (``in_channels`` 3) or as luminance (1; models without it)."""
    return color_for_channels(getattr(model, "in_channels", 1))


def _as_luminance(x: Any, color: bool = False) -> np.ndarray:
    """A numpy array, PIL image or path as (H, W) float32 luminance, or (H, W, 3) RGB with ``color``."""
    if isinstance(x, (str, os.PathLike)):
        return read_image(x, color=color)
    if isinstance(x, Image.Image):
        if x.mode not in ("L", "LA", "RGB", "RGBA", "I", "I;16", "F"):
            x = x.convert("RGBA" if "A" in x.mode else "RGB")
        x = np.asarray(x)
    if not isinstance(x, np.ndarray):
        raise ValueError(  # noqa: TRY004 - texseg reports every bad argument as ValueError
            "x must be a torch tensor, a numpy array (H, W) or (H, W, C), a PIL image or a path; "
            f"got {type(x).__name__}")
    image = to_color(x, name="x") if color else to_luminance(x, name="x")
    if image.shape[0] < MIN_SIZE or image.shape[1] < MIN_SIZE:
        raise ValueError(f"x must be at least {MIN_SIZE}x{MIN_SIZE} pixels, got {image.shape[1]}x{image.shape[0]}")
    return image


# Side of the probe input whose forward pass measures a model's activations per pixel.
_PROBE = 32
# Sides beyond this are refused whatever the memory (torch's indexing and Pillow's limits).
_MAX_SIDE = 2**31 - 1


def _scaled_size(h: int, w: int, scale: float) -> tuple[int, int]:
    """(height, width) after resampling by ``scale``; refused when a side leaves [MIN_SIZE, 2**31)."""
    size = (round(h * scale), round(w * scale))
    if min(size) < MIN_SIZE:
        raise ValueError(f"scale {scale:g} makes the {w}x{h} image {size[1]}x{size[0]}; "
                         f"both sides must stay >= {MIN_SIZE}")
    if max(size) > _MAX_SIDE:
        raise ValueError(f"scale {scale:g} makes the {w}x{h} image {size[1]:.3g}x{size[0]:.3g} pixels; "
                         f"use a smaller `scale`")
    return size


def _tile_for(tile: int | None, wh: int, ww: int) -> int:
    """The window side predict_image uses for a (wh, ww) working image; 0: whole."""
    if tile is None:
        return DEFAULT_TILE if wh * ww > WHOLE_IMAGE_PIXELS else 0
    return tile if max(wh, ww) > tile else 0


def _activation_bytes_per_pixel(model: nn.Module) -> tuple[int, int]:
    """(output channels, bytes per input pixel a no-grad forward pass holds), from a small probe pass.

    The largest module output per pixel, three times (an input, an output and a skip
    connection live at once), as the training estimate counts evaluation batches.
    Cached per model (:data:`texseg.inference.fusion.model_cache`): the probe's many
    small operations cost a sizeable share of a 1024x1024 prediction on a busy 2-core CPU.
    """
    return model_cache.get(model, "activation_bytes", lambda: _probe_activation_bytes(model))


@torch.no_grad()
def _probe_activation_bytes(model: nn.Module) -> tuple[int, int]:
    """:func:`_activation_bytes_per_pixel`, measured."""
    largest = [0]

    def count(module: nn.Module, inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor):
            largest[0] = max(largest[0], output.numel())

    hooks = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
    was_training = model.training
    model.eval()
    try:
        out = model(torch.zeros(1, getattr(model, "in_channels", 1), _PROBE, _PROBE, device=model_device(model)))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    per_pixel = max(largest[0], out.numel()) / _PROBE**2
    return int(out.shape[1]), int(np.ceil(3 * 4 * per_pixel))


def estimate_predict_bytes(model: nn.Module, height: int, width: int, *, tile: int | None = None,
                           scale: float = 1.0, batch_size: int = 1, gabor: bool = False) -> int:
    """Rough peak memory of :func:`predict_file` for a (height, width) image, before anything is allocated.

    The float32 image, its resampled copy, the C probability planes at both sizes, the
    labels and the overlay, plus the model's activations for one window batch (or the
    whole image when it is predicted whole); for a texture-embedding model also what
    grouping its embeddings holds (:func:`_grouping_bytes_per_pixel`; ``gabor``: with the
    image's Gabor energies beside them).
    """
    check_positive("scale", scale)
    wh, ww = _scaled_size(height, width, scale) if scale != 1.0 else (height, width)
    channels, per_pixel = _activation_bytes_per_pixel(model)
    use_tile = _tile_for(tile, wh, ww)
    pixels, work = height * width, wh * ww
    forward = per_pixel * (batch_size * min(use_tile, wh) * min(use_tile, ww) if use_tile else work)
    resampled = (work * 4 + channels * pixels * 4) if scale != 1.0 else 0
    image = pixels * 4 * getattr(model, "in_channels", 1)  # float32 luminance, or RGB for a colour model
    grouping = _grouping_bytes_per_pixel(channels, gabor) * work if is_embedding_model(model) else 0
    return int(image + resampled + channels * work * 4 + pixels * (1 + 4) + forward + grouping)


def _grouping_bytes_per_pixel(dims: int, gabor: bool) -> int:
    """Bytes per pixel that grouping D-dimensional embeddings holds beside them (:mod:`texseg.inference.grouping`).

    The smoothed embeddings, their per-pixel copy for the nearest-centre search and the
    int64 labels (twice); with the Gabor energies, the bank's responses and their
    standardised copy. Measured peak at 2048x2048 with ``texseg:general`` (D = 8): 343
    bytes per pixel (K given), 426 with the energies, 361 one-shot; the whole estimate
    gives 345 and 441 (it said 233 before grouping was counted).
    """
    return 3 * 4 * dims + 2 * 8 + (2 * 4 * len(gabor_bank()) if gabor else 0)


def check_predict_memory(model: nn.Module, height: int, width: int, settings: PredictSettings | None = None, *,
                         name: str = "the image", gabor: bool = False) -> None:
    """Refuse up front (ValueError naming ``scale`` and ``tile``) a prediction that cannot fit in memory.

    Args:
        model: the model; height, width: the image's size.
        settings: its tile, scale and batch size (default :class:`PredictSettings`).
        name: the image, for the message. gabor: a texture-embedding model groups with the
            image's Gabor energies (:func:`estimate_predict_bytes`).
    """
    settings = settings or PredictSettings()
    tile, scale = settings.tile, settings.scale
    wh, ww = _scaled_size(height, width, scale) if scale != 1.0 else (height, width)
    use_tile = _tile_for(tile, wh, ww)
    how = f"in windows of {use_tile}" if use_tile else "whole"
    scaled = f", {ww}x{wh} at scale {scale:g}" if scale != 1.0 else ""
    advice = ("use a smaller `scale`" if use_tile else "use a smaller `scale` or a `tile` such as 512")
    device = model_device(model)
    check_memory(estimate_predict_bytes(model, height, width, tile=tile, scale=scale, batch_size=settings.batch_size,
                                        gabor=gabor),
                 device if device.type == "cuda" else torch.device("cpu"),
                 f"predicting {name} ({width}x{height}{scaled}) {how}", advice)


def _resize(planes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(C, H, W) -> (C, *size), bilinear (antialiased when shrinking)."""
    shrink = size[0] < planes.shape[-2] or size[1] < planes.shape[-1]
    return F.interpolate(planes[None], size=size, mode="bilinear", align_corners=False, antialias=shrink)[0]


@torch.no_grad()
def predict_image(model: nn.Module, image: np.ndarray, settings: PredictSettings | None = None,
                  **options: Any) -> np.ndarray:
    """Probabilities of one (H, W) luminance image; it is min-max normalised *in place*.

    Args:
        model: segmentation model (put in eval mode for the call).
        image: (H, W) float32 luminance, e.g. from :func:`texseg.inference.io.read_image`;
            (H, W, 3) RGB for a colour model (``read_image(path, color=True)``).
        settings: tiling, scale, batch size, window and precision (default :class:`PredictSettings`;
            ``overwrite`` and ``max_pixels`` do not apply to an image in memory).
        **options: fields of :class:`PredictSettings` that override ``settings``, e.g. ``tile=0``
            (always whole), ``tile=256``, ``scale=0.5`` (probabilities are resampled back to (H, W)),
            ``precision="fp32"``.

    Returns:
        (C, H, W) float32: C = 1 (probability of label 0) for two regions, else K.
    """
    settings = dataclasses.replace(settings or PredictSettings(), **options)
    check_predict_memory(model, *image.shape[:2], settings)
    return _predict_checked(model, image, settings)


def _predict_checked(model: nn.Module, image: np.ndarray, settings: PredictSettings) -> np.ndarray:
    """:func:`predict_image` once its arguments and memory are checked."""
    h, w = image.shape[:2]
    work = image
    if settings.scale != 1.0:
        work = _resize(torch.from_numpy(image_planes(image)), _scaled_size(h, w, settings.scale)).numpy()
        work = work[0] if image.ndim == 2 else np.ascontiguousarray(np.moveaxis(work, 0, -1))
    normalize_image(work)
    if work is not image:
        normalize_image(image)  # callers (the overlay) see the image as the model saw it
    use_tile = _tile_for(settings.tile, *work.shape[:2])
    was_training = model.training
    model.eval()
    try:
        x = torch.from_numpy(image_planes(work))  # (C, H, W)
        if use_tile:
            probs = predict_tiled(model, x, use_tile, settings.overlap, batch_size=settings.batch_size,
                                  window=settings.window, precision=settings.precision)
        else:
            probs = _predict_tensor(model, x, 1, settings.precision)[0].cpu().numpy()
    finally:
        model.train(was_training)
    if probs.shape[-2:] != (h, w):
        probs = _resize(torch.from_numpy(probs), (h, w)).numpy()
    return probs


def predict(
    model: nn.Module,
    x: Any,
    batch_size: int = 32,
    *,
    tile: int | None = None,
    overlap: float = DEFAULT_OVERLAP,
    scale: float = 1.0,
    precision: str = "auto",
) -> torch.Tensor:
    """Class probabilities of ``x``, at ``x``'s size.

    Args:
        model: a segmentation model (logits out); run in eval mode, its mode is restored.
        x: a tensor (B, 1, H, W), (1, H, W) or (H, W) (``tile`` and ``scale`` do not
            apply): float values in [0, 1] are used as they are (the training data's range);
            anything else (0..255 floats, uint8) is min-max normalised per image as training
            images are, so a model never sees a scale it was not trained on; or a numpy array (H, W) / (H, W, C)
            with C in 1..4, a PIL image, or a path to an image file, each converted to
            luminance (RGB for a colour model, ``in_channels=3``; a tensor must then be
            (B, 3, H, W)) and min-max normalised over the whole image (uint8 / 255, uint16 /
            65535 as for files). Refused: other shapes, complex/object dtypes, NaN/inf,
            sides < 16 pixels (ValueError); unreadable files (ImageReadError).
        batch_size: images (tensor input) or windows (other inputs) per forward pass.
        tile, overlap, scale: see :func:`predict_image`.
        precision: ``auto`` (bf16 where the hardware has native bf16, else fp32), ``fp32`` or ``bf16``.

    Returns:
        (B, C, H, W) probabilities for a tensor (on its device); (1, C, H, W) float32 CPU
        for the other inputs. C = 1 (P(label 0), the notebook's Omega_1) for two regions,
        else K (softmax).
    """
    check_int("batch_size", batch_size, minimum=1)
    check_choice("precision", precision, PRECISIONS)
    if isinstance(x, torch.Tensor):
        x = _as_batch(x)
        channels = getattr(model, "in_channels", 1)
        if x.ndim == 4 and x.shape[1] != channels:
            raise ValueError(f"images have {x.shape[1]} channel(s) but the model takes {channels} (colour images: "
                             "pass a numpy array (H, W, C), converted to what the model reads)")
        was_training = model.training
        model.eval()
        try:
            return _predict_tensor(model, x, batch_size, precision)
        finally:
            model.train(was_training)
    image = _as_luminance(x, model_color(model))
    probs = predict_image(model, image, tile=tile, overlap=overlap, scale=scale, batch_size=min(batch_size, 8),
                          precision=precision)
    return torch.from_numpy(probs)[None]


def _as_batch(x: torch.Tensor) -> torch.Tensor:
    """A (B, 1, H, W) float tensor in the training range from (B, 1, H, W), (1, H, W) or (H, W)."""
    if x.ndim == 3 and x.shape[0] == 1:
        x = x[None]
    if x.ndim == 3 and x.shape[0] == 3:
        x = x[None]
    if x.ndim not in (2, 4) or (x.ndim == 4 and x.shape[1] not in (1, 3)):
        raise ValueError(f"images must be a tensor of shape (B, C, H, W) with C = 1 (grey) or 3 (colour), "
                         f"(C, H, W) or (H, W), got {tuple(x.shape)}")
    if x.is_complex() or x.dtype == torch.bool:
        raise ValueError(f"images must hold real numbers, got {x.dtype}")
    x = x.float()
    if not bool(torch.isfinite(x).all()):
        raise ValueError("images must not contain NaN or inf")
    if x.numel() and (float(x.min()) < 0 or float(x.max()) > 1):
        lo = x.amin(dim=(-2, -1), keepdim=True)
        span = (x.amax(dim=(-2, -1), keepdim=True) - lo).clamp_min(1e-12)
        x = (x - lo) / span  # per image, as the generator and image files are normalised
    return x


def labels_from_probs(probs: np.ndarray) -> np.ndarray:
    """(C, H, W) probabilities -> (H, W) uint8 labels 0..K-1.

    Two regions (C = 1): label 0 where P(label 0) > 0.5 (the metrics' threshold), else 1.
    """
    out = np.empty(probs.shape[1:], dtype=np.uint8)
    for r in range(0, out.shape[0], _ROWS):  # row blocks: no full-size bool/int64 temporaries
        block = probs[:, r:r + _ROWS]
        out[r:r + _ROWS] = block[0] <= 0.5 if probs.shape[0] == 1 else block.argmax(axis=0)
    return out


def overlay_image(image: np.ndarray, labels: np.ndarray, tint: float = 0.3, rows: int = _OVERLAY_ROWS) -> np.ndarray:
    """(H, W, 3) uint8: the [0, 1] image in gray, each region tinted, boundaries in yellow.

    Built ``rows`` rows at a time (with a one-row halo for the boundaries), so its
    temporaries stay small for gigapixel images.

    Args:
        image: (H, W) float in [0, 1] (shown in gray), or (H, W, 3) RGB (shown in colour).
        labels: (H, W) integer labels.
        tint: weight of the region colour (0: none).
    """
    out = np.empty((*labels.shape, 3), dtype=np.uint8)
    for r, block in _overlay_blocks(image, labels, tint, rows):
        out[r:r + block.shape[0]] = block
    return out


def _overlay_blocks(image: np.ndarray, labels: np.ndarray, tint: float, rows: int
                    ) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, (rows, W, 3) uint8 block) of :func:`overlay_image`, top to bottom."""
    h = labels.shape[0]
    palette = (_PALETTE * tint).astype(np.float32)
    for r in range(0, h, rows):
        lo, hi = max(r - 1, 0), min(r + rows + 1, h)
        block = labels[r:r + rows]
        rgb = palette[block % len(_PALETTE)]
        rgb += (image[r:r + rows] if image.ndim == 3 else image[r:r + rows, :, None]) * np.float32(255 * (1 - tint))
        out = np.clip(rgb, 0, 255, out=rgb).astype(np.uint8)
        edges = find_boundaries(labels[lo:hi], mode="inner")[r - lo:r - lo + block.shape[0]]
        out[edges] = _BOUNDARY
        yield r, out


def write_overlay(path: Path, image: np.ndarray, labels: np.ndarray) -> None:
    """Write :func:`overlay_image` as an RGB PNG, atomically, without an (H, W, 3) numpy copy.

    The blocks are pasted straight into the Pillow image that is encoded, so the only
    full-size buffer is Pillow's own.
    """
    h, w = labels.shape
    canvas = Image.new("RGB", (w, h))
    for r, block in _overlay_blocks(image, labels, 0.3, _OVERLAY_ROWS):
        canvas.paste(Image.fromarray(block), (0, r))  # (rows, W, 3) uint8 -> RGB
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")


#: Name endings of predict_file's outputs that are images: never taken as inputs from a folder.
OUTPUT_IMAGE_SUFFIXES = (".mask.png", ".overlay.png")


def output_paths(input_path: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Where :func:`predict_file` writes for ``input_path``: keys mask, prob, overlay."""
    stem = Path(input_path).stem
    out = Path(out_dir)
    return {"mask": out / f"{stem}.mask.png", "prob": out / f"{stem}.prob.npy", "overlay": out / f"{stem}.overlay.png"}


@dataclass
class PredictResult:
    """What :func:`predict_file` did for one input."""
    input: Path
    written: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    shape: tuple[int, int] | None = None
    seconds: float = 0.0


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (links and relative paths included); False when ``a`` does not exist."""
    try:
        return a.resolve() == b.resolve() or (a.exists() and a.samefile(b))
    except OSError:
        return False


def _write_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def predict_file(
    model: nn.Module, path: str | os.PathLike[str], out_dir: str | os.PathLike[str],
    settings: PredictSettings | None = None, *,
    regions: int | None = None, reference: np.ndarray | None = None, grouping: GroupOptions | None = None,
) -> PredictResult:
    """Segment one image file and write its three outputs into ``out_dir`` atomically.

    ``NAME.mask.png`` (uint8 labels 0..K-1, the input's size), ``NAME.prob.npy`` (float32,
    (H, W) = P(label 0) for two regions, else (K, H, W)) and ``NAME.overlay.png``. Existing
    outputs are kept unless ``settings.overwrite`` (all three there: nothing is read); an
    output that is the input itself is refused. Memory is checked from the file's header
    before decoding; a stop signal is honoured between window batches. A texture-embedding
    model (``texseg:general``) groups its embeddings instead (K ``regions``, estimated, or
    the texture of ``reference``: :func:`texseg.inference.embedding.segment_embedded`),
    the whole image at once, and writes no ``NAME.prob.npy``.

    Args:
        settings: tiling, scale, precision, overwrite and pixel limit (default :class:`PredictSettings`).
        regions, reference, grouping: embedding models only (:func:`~texseg.inference.embedding.segment_embedded`).

    Raises:
        ImageReadError: the file cannot be used. ValueError: it would not fit in memory, or
            an output would replace the input.
    """
    start, path, settings = time.perf_counter(), Path(path), settings or PredictSettings()
    general, color = is_embedding_model(model), model_color(model)  # wrong channel count: refused before any file
    if not general and (regions is not None or reference is not None):
        raise ValueError("regions and reference apply to texture-embedding models (texseg:general) only")
    result, todo = _plan_outputs(path, out_dir, general, settings.overwrite)
    if not todo:
        return result
    layout = read_layout(path)
    check_layout(path, layout, max_pixels=settings.max_pixels)  # the pixel limit first: a bomb is named as one
    grouping = grouping or GroupOptions()
    gabor = general and bool(grouping.weight_for(regions, reference is not None))
    check_predict_memory(model, layout.height, layout.width, dataclasses.replace(settings, tile=0) if general
                         else settings, name=str(path), gabor=gabor)  # texnets embed the whole image at once
    image = read_image(path, max_pixels=settings.max_pixels, color=color)  # as the model was trained
    stop_point()  # decoding a large file takes a while: a stop signal that came meanwhile ends here
    result.shape = image.shape
    how = {"regions": regions, "reference": reference, "options": grouping}
    probs, labels = _segment(model, image, settings, general, how)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    if "prob" in todo:
        _write_npy(todo["prob"], probs[0] if probs.shape[0] == 1 else probs)
    del probs  # C full-size planes: freed before the overlay is encoded
    _write_images(todo, image, labels)
    result.written, result.seconds = list(todo.values()), time.perf_counter() - start
    return result


def _segment(model: nn.Module, image: np.ndarray, settings: PredictSettings, general: bool,
             grouping: dict[str, Any]) -> tuple[np.ndarray | None, np.ndarray]:
    """(probabilities or None for an embedding model, labels) of one image; ``image`` ends normalised.

    ``grouping``: ``regions``, ``reference`` and ``options`` of an embedding model.
    """
    if general:
        labels = segment_embedded(model, image, scale=settings.scale, precision=settings.precision, **grouping)
        normalize_image(image)  # the overlay shows the image as the model saw it
        return None, labels
    probs = _predict_checked(model, image, settings)
    return probs, labels_from_probs(probs)


def _plan_outputs(path: Path, out_dir: str | os.PathLike[str], general: bool, overwrite: bool
                  ) -> tuple[PredictResult, dict[str, Path]]:
    """The result (outputs kept) and the outputs to write; refuses an output that is the input."""
    targets = {k: p for k, p in output_paths(path, out_dir).items() if not (general and k == "prob")}
    clash = [p for p in targets.values() if _same_file(p, path)]
    if clash:
        raise ValueError(f"{path}: its output {clash[0].name} would replace the input itself; choose another `out`")
    todo = {k: p for k, p in targets.items() if overwrite or not p.exists()}
    return PredictResult(path, kept=[p for k, p in targets.items() if k not in todo]), todo


def _write_images(todo: dict[str, Path], image: np.ndarray, labels: np.ndarray) -> None:
    """Write the mask and overlay named in ``todo``, each atomically."""
    if "mask" in todo:
        write_label_png(todo["mask"], labels)
    if "overlay" in todo:
        write_overlay(todo["overlay"], image, labels)
