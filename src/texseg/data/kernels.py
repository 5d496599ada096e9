"""Gaussian smoothing of image batches, exactly as the notebook's ``F.conv2d`` does it.

The notebook convolves every field with an N x N Gaussian sampled on
``linspace(-N/2, N/2, N)`` (spacing N/(N-1), not 1) with ``padding='same'``: an
O(N^4) direct convolution per image. That kernel is separable, so the same
result is ``T @ X @ T.T`` with an N x N banded Toeplitz matrix ``T`` holding the 1D
kernel: O(N^3) per image, done by BLAS, and memory O(B N^2), never N^2 x N^2.
"""

from __future__ import annotations

from functools import lru_cache

import torch

# Weights below this (relative to the kernel's peak, before normalisation) are set to
# zero. Their total is < N * 1e-20, far below float64 rounding, so results do not
# change; but left in, they are float32 denormals and make the matmul ~10x slower.
_NEGLIGIBLE = 1e-20


def gaussian_weights(n: int, sigma: float) -> torch.Tensor:
    """The notebook's normalised 1D Gaussian on ``linspace(-n/2, n/2, n)``, in float64.

    The notebook's 2D kernel ``exp(-(x^2+y^2)/(2 sigma^2)) / sum`` equals
    ``outer(w, w)`` for this ``w``. Exponents are shifted by their minimum first so
    that tiny sigmas do not underflow to an all-zero kernel (the shift cancels in the
    normalisation).

    Args:
        n: number of grid points (the image size).
        sigma: standard deviation in grid units (> 0).

    Returns:
        (n,) float64 tensor summing to 1.
    """
    xs = torch.linspace(-n / 2, n / 2, n, dtype=torch.float64)
    sq = xs**2
    w = torch.exp(-(sq - sq.min()) / (2.0 * sigma * sigma))
    w = torch.where(w < _NEGLIGIBLE, torch.zeros((), dtype=w.dtype), w)
    return w / w.sum()


@lru_cache(maxsize=128)
def smoothing_matrix(n: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Toeplitz matrix ``T`` such that ``T @ x`` is the notebook's 'same' 1D convolution.

    PyTorch's ``padding='same'`` pads ``(n-1)//2`` on the left and the rest on the right
    (asymmetric for even n), and conv2d is a cross-correlation, so
    ``out[i] = sum_k x[i + k - (n-1)//2] * w[k]``, i.e. ``T[i, j] = w[j - i + (n-1)//2]``.

    Returns:
        (n, n) tensor of ``dtype`` on ``device``. Cached: treat it as read-only.
    """
    w = gaussian_weights(n, sigma)
    left = (n - 1) // 2
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    k = j - i + left
    inside = (k >= 0) & (k < n)
    t = torch.where(inside, w[k.clamp(0, n - 1)], torch.zeros((), dtype=torch.float64))
    return t.to(dtype=dtype, device=device)


def gaussian_smooth(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Smooth the last two (square) dims of ``x`` with the notebook's Gaussian kernel.

    Args:
        x: (..., N, N) float tensor.
        sigma: kernel standard deviation in grid units (> 0).

    Returns:
        Tensor of the same shape, dtype and device: ``F.conv2d(x, g, padding='same')``.
    """
    t = smoothing_matrix(x.shape[-1], float(sigma), x.dtype, x.device)
    return t @ x @ t.T
