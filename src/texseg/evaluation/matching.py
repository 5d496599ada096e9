"""Matching predicted labels to true labels when label numbers carry no meaning.

Unsupervised segmenters (k-means, thresholds) and models trained on textures drawn from
a pool return region numbers in arbitrary order: "region 2" of a prediction may be
"region 0" of the truth. Scores are then computed after the best one-to-one assignment of
predicted to true labels, found on the confusion matrix with the Hungarian algorithm
(``scipy.optimize.linear_sum_assignment``), maximising the number of agreeing pixels.

Two granularities: **per image** (:func:`match_images`: each image's own confusion matrix
gets its own assignment; what every score of arbitrary labels uses by default, since a
model may call a texture "region 0" in one image and "region 1" in the next) and **per
set** (:func:`match_confusion` on the matrix summed over the set: one assignment for all
images, which only undoes a swap the model makes consistently).
"""

from __future__ import annotations

import itertools
from functools import cache

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

__all__ = ["best_assignment", "match_confusion", "match_images", "relabel"]

# Up to this K, per-image matching tries every permutation at once on the device (6! = 720);
# above it, the Hungarian algorithm runs image by image on the host.
ENUMERATE_UP_TO = 6


def best_assignment(cm: Tensor | np.ndarray) -> np.ndarray:
    """The predicted label to give each true label so that most pixels agree.

    Args:
        cm: (K, K) counts, rows = true label, columns = predicted label.

    Returns:
        ``perm`` of length K: true label ``t`` is matched with predicted label ``perm[t]``.
    """
    counts = cm.detach().cpu().numpy() if isinstance(cm, Tensor) else np.asarray(cm)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"cm must be a square (K, K) matrix, got shape {counts.shape}")
    rows, cols = linear_sum_assignment(counts, maximize=True)
    perm = np.empty(counts.shape[0], dtype=np.int64)
    perm[rows] = cols
    return perm


def match_confusion(cm: Tensor) -> tuple[Tensor, np.ndarray]:
    """Reorder the columns of ``cm`` so predicted labels line up with their best true label.

    Args:
        cm: (K, K) counts, rows = true, columns = predicted.

    Returns:
        ``(matched, perm)``: ``matched[:, t] = cm[:, perm[t]]``, so the diagonal of
        ``matched`` counts the pixels that agree after matching; ``perm`` as in
        :func:`best_assignment`.
    """
    perm = best_assignment(cm)
    return cm[:, torch.as_tensor(perm, device=cm.device)], perm


def relabel(pred: Tensor, perm: np.ndarray) -> Tensor:
    """Rename predicted labels to the true labels they were matched with.

    Args:
        pred: int labels of any shape in ``0..K-1``.
        perm: from :func:`best_assignment` (true ``t`` <- predicted ``perm[t]``).

    Returns:
        Labels of the same shape where predicted ``perm[t]`` became ``t``.
    """
    inverse = torch.empty(len(perm), dtype=torch.long, device=pred.device)
    inverse[torch.as_tensor(perm, device=pred.device)] = torch.arange(len(perm), device=pred.device)
    return inverse[pred.long()]


@cache
def _permutations(k: int) -> Tensor:
    """(K!, K) every permutation of 0..K-1, the identity first."""
    return torch.tensor(list(itertools.permutations(range(k))), dtype=torch.long)


def match_images(cms: Tensor) -> tuple[Tensor, Tensor]:
    """The best assignment of each image's own confusion matrix (per-image matching).

    For K <= :data:`ENUMERATE_UP_TO` every permutation is scored at once (for K = 2 this is
    just ``max(agree, 1 - agree)``), on the device of ``cms`` and without waiting for it; ties
    keep the identity. Larger K run :func:`best_assignment` per image.

    Args:
        cms: (B, K, K) counts per image, rows = true, columns = predicted.

    Returns:
        ``(matched, perms)``: ``matched[b][:, t] = cms[b][:, perms[b, t]]`` (B, K, K), so each
        image's diagonal counts its agreeing pixels after matching; ``perms`` (B, K) int64.
    """
    if not isinstance(cms, Tensor) or cms.ndim != 3 or cms.shape[1] != cms.shape[2]:
        raise ValueError(f"cms must be a (B, K, K) tensor, got {getattr(cms, 'shape', type(cms).__name__)}")
    b, k, _ = cms.shape
    if k <= ENUMERATE_UP_TO:
        perms = _permutations(k).to(cms.device)  # (P, K)
        scores = cms[:, torch.arange(k, device=cms.device)[None, :], perms].sum(-1)  # (B, P): agreeing pixels
        best = perms[scores.argmax(dim=1)]  # argmax keeps the first maximum: the identity on ties
    else:
        best = torch.as_tensor(np.stack([best_assignment(c) for c in cms.cpu()]), device=cms.device)
    return torch.gather(cms, 2, best[:, None, :].expand(b, k, k)), best
