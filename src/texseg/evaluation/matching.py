"""Matching predicted labels to true labels when label numbers carry no meaning.

Unsupervised segmenters (k-means, thresholds) and models trained on textures drawn from
a pool return region numbers in arbitrary order: "region 2" of a prediction may be
"region 0" of the truth. Scores are then computed after the best one-to-one assignment of
predicted to true labels, found on the confusion matrix with the Hungarian algorithm
(``scipy.optimize.linear_sum_assignment``), maximising the number of agreeing pixels.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

__all__ = ["best_assignment", "match_confusion", "matched_metrics", "relabel"]


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


def matched_metrics(cm: Tensor) -> dict[str, float]:
    """Metrics after the best label matching (for models whose label numbers are arbitrary).

    Args:
        cm: (K, K) counts, rows = true, columns = predicted (e.g. ``ConfusionMatrix.matrix``).

    Returns:
        :func:`texseg.evaluation.metrics.metrics_from_confusion` of the matched matrix,
        plus ``matched = 1.0`` so a table or file says which mode the numbers are in.
    """
    from texseg.evaluation.metrics import metrics_from_confusion

    matched, _ = match_confusion(cm)
    return {**metrics_from_confusion(matched), "matched": 1.0}
