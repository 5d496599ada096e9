"""Sliding-window inference with a blending window, memory bounded by the tile.

The image is covered by ``tile x tile`` windows that overlap by ``overlap * tile``
pixels (the last window of a row or column is moved back so it ends on the border).
Each window's probabilities are multiplied by a Gaussian weight window (sigma = tile/8,
as MONAI's ``sliding_window_inference`` does; floored at 1e-3 so border pixels seen by a
single window still count) or a linear ramp, and accumulated; the result is the weighted mean. Pixels far
from a window's edge -- where zero padding inside the network does not reach -- dominate,
so no seams show. Only the accumulator (C float32 planes of the image's size) and
``batch_size`` tiles are in memory at once. A stop signal (:mod:`texseg.signals`) is
honoured between two window batches.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from texseg._validate import check_int, check_positive
from texseg.inference.inferer import forward_probs
from texseg.signals import stop_point

__all__ = ["WINDOWS", "n_windows", "predict_tiled", "tile_starts", "weight_window"]

#: Blending windows of the tiles.
WINDOWS = ("gaussian", "ramp")


def tile_starts(length: int, tile: int, overlap: float) -> list[int]:
    """Start offsets of windows of size ``min(tile, length)`` covering ``0..length-1``.

    The stride is ``tile - round(overlap * tile)`` (at least 1); the last window ends on the border.
    """
    tile = min(tile, length)
    stride = max(1, tile - round(overlap * tile))
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def _profile(n: int, kind: str) -> np.ndarray:
    """1-D blending weights of length n, max 1, floored at sqrt(1e-3) (so 2-D weights are >= 1e-3)."""
    x = np.arange(n, dtype=np.float64) - (n - 1) / 2
    if kind == "gaussian":
        w = np.exp(-0.5 * (x / (n / 8)) ** 2)
    elif kind == "ramp":
        w = 1 - np.abs(x) / (n / 2)
    else:
        raise ValueError(f"window must be one of gaussian, ramp; got {kind!r}")
    return np.maximum(w / w.max(), 1e-3**0.5).astype(np.float32)


def weight_window(height: int, width: int, kind: str = "gaussian") -> torch.Tensor:
    """(height, width) blending weights, 1 at the centre: the outer product of two 1-D profiles.

    Args:
        kind: ``gaussian`` (sigma = size/8) or ``ramp`` (linear, 1 at the centre); each
            1-D profile is floored at sqrt(1e-3), so every weight is >= 1e-3.
    """
    return torch.from_numpy(np.outer(_profile(height, kind), _profile(width, kind)))


def _coverage(length: int, tile: int, starts: list[int], profile: np.ndarray) -> np.ndarray:
    """Sum over windows of the 1-D profile: the weight normaliser along one axis."""
    total = np.zeros(length, dtype=np.float32)
    for s in starts:
        total[s:s + tile] += profile
    return total


def predict_tiled(
    model: nn.Module,
    image: torch.Tensor,
    tile: int,
    overlap: float = 0.25,
    *,
    batch_size: int = 1,
    window: str = "gaussian",
    precision: str = "auto",
) -> np.ndarray:
    """Class probabilities of one large image by blended sliding windows.

    Args:
        model: segmentation model in eval mode (logits out: C = 1 or K channels).
        image: (H, W) or (C, H, W) float tensor, already normalised as a whole (never per tile).
        tile: window side in pixels (>= 16; clipped to the image's sides).
        overlap: fraction of the window shared with its neighbour, in [0, 0.9].
        batch_size: windows per forward pass.
        window: ``gaussian`` or ``ramp`` blending weights.
        precision: ``auto``, ``fp32`` or ``bf16`` (see :func:`texseg.inference.inferer.forward`).

    Returns:
        (C, H, W) float32 numpy probabilities (sigmoid for C = 1, softmax otherwise).
    """
    image = _check_tiling(image, tile, overlap, batch_size)
    h, w = image.shape[-2:]
    th, tw = min(tile, h), min(tile, w)
    py, px = _profile(th, window), _profile(tw, window)
    weights = torch.from_numpy(np.outer(py, px))
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    boxes = [(y, x) for y in ys for x in xs]
    acc: np.ndarray | None = None
    for start in range(0, len(boxes), batch_size):
        stop_point()  # a stop signal ends a long image between two window batches
        chunk = boxes[start:start + batch_size]
        x = torch.stack([image[:, y:y + th, x0:x0 + tw] for y, x0 in chunk])
        probs = forward_probs(model, x, precision).cpu()
        if acc is None:
            acc = np.zeros((probs.shape[1], h, w), dtype=np.float32)
        for (y, x0), p in zip(chunk, (probs * weights).numpy()):
            acc[:, y:y + th, x0:x0 + tw] += p
    assert acc is not None
    # The window grid is a product grid and the weights separable, so the sum of weights
    # at (y, x) is cov_y[y] * cov_x[x]: no (H, W) normaliser is stored.
    cov_y, cov_x = _coverage(h, th, ys, py), _coverage(w, tw, xs, px)
    for r in range(0, h, 256):
        acc[:, r:r + 256] /= cov_y[r:r + 256, None] * cov_x[None, :]
    return acc


def _check_tiling(image: torch.Tensor, tile: int, overlap: float, batch_size: int) -> torch.Tensor:
    """Refuse (ValueError naming the argument) what :func:`predict_tiled` cannot use; ``image`` as (C, H, W)."""
    check_int("tile", tile, minimum=16)
    check_positive("overlap", overlap, allow_zero=True)
    if overlap > 0.9:
        raise ValueError(f"overlap must be a fraction in [0, 0.9], got {overlap!r}")
    check_int("batch_size", batch_size, minimum=1)
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3:
        raise ValueError(f"image must be a (H, W) or (C, H, W) tensor, got shape {tuple(image.shape)}")
    return image


def n_windows(height: int, width: int, tile: int, overlap: float) -> int:
    """How many windows :func:`predict_tiled` runs for an image of this size."""
    return len(tile_starts(height, tile, overlap)) * len(tile_starts(width, tile, overlap))

