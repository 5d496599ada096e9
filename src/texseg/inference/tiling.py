"""Sliding-window inference with a blending window, memory bounded by the tile.

The image is covered by ``tile x tile`` windows that overlap by ``overlap * tile``
pixels (the last window of a row or column is moved back so it ends on the border).
Each window's probabilities are multiplied by a Gaussian weight window (sigma = tile/8,
as MONAI's ``sliding_window_inference`` does; floored at 1e-3 so border pixels seen by a
single window still count) and accumulated; the result is the weighted mean. Pixels far
from a window's edge -- where zero padding inside the network does not reach -- dominate,
so no seams show. Only the accumulators (C+1 float32 planes of the image's size) and
``batch_size`` tiles are in memory at once.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from texseg._validate import check_int, check_positive

__all__ = ["n_windows", "predict_tiled", "tile_starts", "weight_window"]


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


def weight_window(height: int, width: int, kind: str = "gaussian") -> torch.Tensor:
    """(height, width) blending weights, 1 at the centre.

    Args:
        kind: ``gaussian`` (sigma = size/8, floored at 1e-3) or ``ramp`` (linear, from
            1/(n/2) at the border to 1 at the centre).
    """
    def profile(n: int) -> torch.Tensor:
        x = torch.arange(n, dtype=torch.float64) - (n - 1) / 2
        if kind == "gaussian":
            w = torch.exp(-0.5 * (x / (n / 8)) ** 2)
        elif kind == "ramp":
            w = 1 - x.abs() / (n / 2)
        else:
            raise ValueError(f"window must be one of gaussian, ramp; got {kind!r}")
        return w

    w = profile(height)[:, None] * profile(width)[None, :]
    return (w / w.max()).clamp(min=1e-3).float()


@torch.no_grad()
def predict_tiled(
    model: nn.Module,
    image: torch.Tensor,
    tile: int,
    overlap: float = 0.25,
    *,
    batch_size: int = 4,
    window: str = "gaussian",
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Class probabilities of one large image by blended sliding windows.

    Args:
        model: segmentation model in eval mode (logits out: C = 1 or K channels).
        image: (H, W) float tensor, already normalised as a whole (never per tile).
        tile: window side in pixels (>= 16; clipped to the image's sides).
        overlap: fraction of the window shared with its neighbour, in [0, 0.9].
        batch_size: windows per forward pass.
        window: ``gaussian`` or ``ramp`` blending weights.
        out: optional preallocated (C, H, W) float32 array to fill.

    Returns:
        (C, H, W) float32 numpy probabilities (sigmoid for C = 1, softmax otherwise).
    """
    check_int("tile", tile, minimum=16)
    check_positive("overlap", overlap, allow_zero=True)
    if overlap > 0.9:
        raise ValueError(f"overlap must be a fraction in [0, 0.9], got {overlap!r}")
    check_int("batch_size", batch_size, minimum=1)
    if image.ndim != 2:
        raise ValueError(f"image must be a (H, W) tensor, got shape {tuple(image.shape)}")
    h, w = image.shape
    th, tw = min(tile, h), min(tile, w)
    weights = weight_window(th, tw, window)
    boxes = [(y, x) for y in tile_starts(h, tile, overlap) for x in tile_starts(w, tile, overlap)]
    device = next(model.parameters()).device
    acc: np.ndarray | None = out
    norm = np.zeros((h, w), dtype=np.float32)
    wnp = weights.numpy()
    for start in range(0, len(boxes), batch_size):
        chunk = boxes[start:start + batch_size]
        x = torch.stack([image[y:y + th, x0:x0 + tw] for y, x0 in chunk])[:, None].to(device)
        logits = model(x)
        probs = (torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)).float().cpu()
        if acc is None:
            acc = np.zeros((probs.shape[1], h, w), dtype=np.float32)
        elif start == 0:
            acc[...] = 0
        weighted = (probs * weights).numpy()
        for (y, x0), p in zip(chunk, weighted):
            acc[:, y:y + th, x0:x0 + tw] += p
            norm[y:y + th, x0:x0 + tw] += wnp
    assert acc is not None
    acc /= norm  # every pixel is covered by at least one window of weight >= 1e-3
    return acc


def n_windows(height: int, width: int, tile: int, overlap: float) -> int:
    """How many windows :func:`predict_tiled` runs for an image of this size."""
    return len(tile_starts(height, tile, overlap)) * len(tile_starts(width, tile, overlap))

