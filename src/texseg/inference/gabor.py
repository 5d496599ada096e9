"""Gabor filter-bank texture energies (Jain & Farrokhnia 1991), shared by two methods.

``gabor-kmeans`` (:mod:`texseg.segmenters.classical`) clusters them on their own; a
texture-embedding network's grouping (:mod:`texseg.inference.grouping`) sets them beside
its embeddings. One implementation, so the two cannot drift apart.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage
from scipy.signal import fftconvolve
from skimage.filters import gabor_kernel

__all__ = ["DEFAULT_FREQUENCIES", "DEFAULT_ORIENTATIONS", "gabor_bank", "gabor_energies"]

#: The bank ``gabor-kmeans`` uses by default (chosen on the tune suites, docs/benchmark.md).
DEFAULT_FREQUENCIES = (0.1, 0.2, 0.35)
DEFAULT_ORIENTATIONS = 4


@lru_cache(maxsize=8)
def gabor_bank(frequencies: tuple[float, ...] = DEFAULT_FREQUENCIES, orientations: int = DEFAULT_ORIENTATIONS,
               bandwidth: float = 1.0) -> tuple[tuple[float, np.ndarray], ...]:
    """(frequency, real Gabor kernel) for every filter: each frequency at ``orientations`` angles over 180 degrees."""
    thetas = np.pi * np.arange(orientations) / orientations
    return tuple((f, np.real(gabor_kernel(f, theta=t, bandwidth=bandwidth))) for f in frequencies for t in thetas)


def gabor_energies(image: np.ndarray, bank: tuple[tuple[float, np.ndarray], ...] | None = None, *,
                   alpha: float = 1.0, smoothing: float = 1.0, dtype: type = np.float64) -> np.ndarray:
    """Texture energies of one image: one plane per filter of ``bank``.

    Each filter's response (the image reflected at its edges) goes through a saturating
    ``tanh(alpha * r / std(r))``, and its absolute value is averaged in a Gaussian window
    of sigma ``smoothing / frequency`` (a few periods of the filter).

    Args:
        image: (H, W) float luminance.
        bank: from :func:`gabor_bank` (default: its default bank).
        alpha: slope of the tanh, per standard deviation of the response.
        smoothing: the window's sigma as a multiple of the filter's period.
        dtype: of the computation and the result (float32 halves the memory of a large image).

    Returns:
        (F, H, W) array of ``dtype``, F = the number of filters; not standardised.
    """
    image = np.asarray(image, dtype=dtype)
    h, w = image.shape
    centred = image - image.mean()
    out = np.empty((len(bank or gabor_bank()), h, w), dtype=dtype)
    for i, (freq, kernel) in enumerate(bank or gabor_bank()):
        pad = max(kernel.shape) // 2
        padded = np.pad(centred, pad, mode="reflect")
        response = fftconvolve(padded, kernel.astype(dtype), mode="same")[pad:pad + h, pad:pad + w]
        response = np.tanh(alpha * response / (response.std() + 1e-12))
        out[i] = ndimage.gaussian_filter(np.abs(response), smoothing / freq, mode="reflect")
    return out
