"""Turning per-pixel texture embeddings (``texnet``) into label maps.

Three ways, all per image:

- :func:`cluster_embeddings` with K given: k-means (scikit-learn) on the embeddings,
  lightly smoothed (a 5x5 box: a texture is a property of a neighbourhood, and lone
  pixels that jump cluster are noise);
- with K unknown (``k=None``): the smallest K whose k-means clusters hold most pixels
  within ``radius`` of their centre. The discriminative loss puts pixels within
  ``delta_v`` of their texture's mean and two textures' means ``2 delta_d`` apart, so a
  radius between the two tells "one texture" from "several" without knowing K;
- :func:`reference_mask` (one-shot): the pixels whose embedding is near the mean
  embedding of a reference patch, split from the rest by Otsu's threshold on the
  distance -- "where is this texture?".
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from skimage.filters import threshold_otsu
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits
from torch import Tensor

from texseg._validate import check_int

__all__ = ["MAX_REGIONS", "cluster_embeddings", "reference_mask", "smooth_embeddings"]

MAX_REGIONS = 8
_SAMPLE = 4096  # pixels k-means is fitted on; every pixel is then assigned


def smooth_embeddings(embeddings: Tensor, size: int = 5) -> Tensor:
    """(D, H, W) embeddings averaged over a ``size`` x ``size`` box (edges: over what is inside)."""
    e = embeddings[None].float()
    return F.avg_pool2d(e, size, stride=1, padding=size // 2, count_include_pad=False)[0]


def _kmeans(points: np.ndarray, k: int, seed: int) -> KMeans:
    rng = np.random.default_rng(seed)
    sample = points if len(points) <= _SAMPLE else points[rng.choice(len(points), _SAMPLE, replace=False)]
    # One thread: on a few thousand rows OpenMP start-up and contention cost more than the work.
    with threadpool_limits(1):
        return KMeans(n_clusters=min(k, len(sample)), n_init=3, random_state=seed).fit(sample)


def cluster_embeddings(embeddings: Tensor, k: int | None, *, seed: int = 0, radius: float = 1.0,
                       coverage: float = 0.9) -> Tensor:
    """Label map of one image from its embeddings.

    Args:
        embeddings: (D, H, W) float.
        k: the number of regions (2..MAX_REGIONS), or None to estimate it: the smallest K
            whose k-means clusters hold ``coverage`` of the pixels within ``radius`` of
            their centre (pixels of one texture lie close to their mean, so more clusters
            only split a texture; boundary pixels, a blend, are the uncovered rest).
        seed: fixes k-means.
        radius, coverage: K unknown: see ``k``.

    Returns:
        (H, W) int64 labels in 0..K-1 (CPU), numbered by decreasing area.
    """
    if embeddings.ndim != 3:
        raise ValueError(f"embeddings must have shape (D, H, W), got {tuple(embeddings.shape)}")
    if k is not None:
        check_int("num_regions", k, 2, MAX_REGIONS)
    d, h, w = embeddings.shape
    points = smooth_embeddings(embeddings).reshape(d, -1).T.detach().cpu().double().numpy()
    for candidate in [k] if k is not None else range(2, MAX_REGIONS + 1):
        km = _kmeans(points, candidate, seed)
        labels = km.predict(points)
        if k is not None:
            break
        spread = np.linalg.norm(points - km.cluster_centers_[labels], axis=1)
        if (spread <= radius).mean() >= coverage:
            break
    # Number regions by decreasing area, so label numbers are reproducible.
    counts = np.bincount(labels, minlength=len(km.cluster_centers_))
    order = np.argsort(-counts, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return torch.from_numpy(rank[labels].reshape(h, w).astype(np.int64))


def reference_mask(embeddings: Tensor, reference: Tensor) -> Tensor:
    """One-shot: where the texture of a reference patch is.

    Each pixel's distance to the reference's mean embedding is small where its texture
    is and large elsewhere; Otsu's threshold (scikit-image) on that distance map splits
    the two without knowing how many other textures the image holds.

    Args:
        embeddings: (D, H, W) of the image.
        reference: (D,) the reference texture's mean embedding, or (D, h, w) its embeddings.

    Returns:
        (H, W) int64: 1 where the reference texture is, 0 elsewhere.
    """
    ref = reference.float().reshape(reference.shape[0], -1).mean(1) if reference.ndim > 1 else reference.float()
    if ref.shape[0] != embeddings.shape[0]:
        raise ValueError(f"reference has {ref.shape[0]} embedding dimensions, the image {embeddings.shape[0]}")
    dist = (smooth_embeddings(embeddings) - ref.to(embeddings.device)[:, None, None]).norm(dim=0).cpu().numpy()
    if float(dist.max() - dist.min()) < 1e-6:  # one texture everywhere: all of it is the reference's
        return torch.ones(dist.shape, dtype=torch.long)
    return torch.from_numpy(dist <= threshold_otsu(dist)).long()
