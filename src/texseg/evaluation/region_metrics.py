"""Region metrics of one label map against the truth, for benchmarking segmenters.

Label numbers of an unsupervised segmenter carry no meaning, so every score here is
either invariant to renaming the predicted labels or computed after matching them to
the true labels (Hungarian assignment on the confusion matrix,
:mod:`texseg.evaluation.matching`):

- ``accuracy``: fraction of pixels whose matched label is right;
- ``iou_k``, ``miou``: matched IoU of true region k, and its mean over the regions present
  in the truth or the matched prediction (a region absent from both is NaN, left out);
- ``vi``, ``vi_split``, ``vi_merge``: variation of information in bits (scikit-image),
  ``vi_split = H(pred | truth)`` (over-segmentation), ``vi_merge = H(truth | pred)``;
- ``are``: adapted Rand error (scikit-image, with no label ignored: texseg's labels start at 0);
- ``bf``: boundary F-score, boundary pixels matched within ``tolerance`` pixels;
- ``gce``: global consistency error (Martin et al. 2001).

Lower is better for ``vi*``, ``are``, ``gce``; higher for the others.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from skimage.metrics import adapted_rand_error, variation_of_information
from skimage.segmentation import find_boundaries

from texseg._validate import check_positive
from texseg.evaluation.matching import best_assignment
from texseg.evaluation.metrics import confusion_matrices
from texseg.evaluation.names import REGION_LABELS, lower_is_better

__all__ = ["HIGHER_IS_BETTER", "boundary_f_score", "confusion", "global_consistency_error", "region_metrics"]

# Summary metrics and their direction; per-region ``iou_k`` are higher-is-better too.
HIGHER_IS_BETTER = {m: not lower_is_better(m) for m in REGION_LABELS}


def _as_2d(name: str, labels: object) -> np.ndarray:
    arr = np.asarray(labels)
    while arr.ndim > 2 and arr.shape[0] == 1:  # (1, 1, H, W) or (1, H, W) -> (H, W)
        arr = arr[0]
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"{name} must be one non-empty (H, W) label map, got shape {np.shape(labels)}")
    if not np.issubdtype(arr.dtype, np.integer) or int(arr.min()) < 0:
        raise ValueError(f"{name} must hold integer labels >= 0, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def confusion(truth: np.ndarray, pred: np.ndarray, size: int | None = None) -> np.ndarray:
    """(K, K) pixel counts, rows = true label, columns = predicted label.

    ``K = max(size, largest label + 1)``, so the matrix is square even when the two maps
    use different numbers of labels. The counts come from
    :func:`~texseg.evaluation.metrics.confusion_matrices`, the one builder of confusion matrices.
    """
    k = max(int(truth.max()) + 1, int(pred.max()) + 1, size or 0)
    as_tensor = [torch.from_numpy(np.ascontiguousarray(a)) for a in (pred, truth)]
    return confusion_matrices(*as_tensor, k).numpy()


def global_consistency_error(cm: np.ndarray) -> float:
    """GCE of a confusion matrix: ``min(n - sum n_ij^2 / r_i, n - sum n_ij^2 / c_j) / n``.

    ``r_i``/``c_j`` are row/column sums. 0 when one segmentation refines the other.
    """
    cm = np.asarray(cm, dtype=np.float64)
    n = cm.sum()
    rows, cols = cm.sum(axis=1, keepdims=True), cm.sum(axis=0, keepdims=True)
    sq = cm**2
    by_rows = n - np.divide(sq, rows, out=np.zeros_like(sq), where=rows > 0).sum()
    by_cols = n - np.divide(sq, cols, out=np.zeros_like(sq), where=cols > 0).sum()
    return float(min(by_rows, by_cols) / n)


def boundary_f_score(truth: np.ndarray, pred: np.ndarray, tolerance: float = 2.0) -> float:
    """F-score of boundary pixels, a boundary pixel counting as found within ``tolerance`` pixels.

    Boundaries are scikit-image's ``find_boundaries(mode="thick")``. Precision is the
    fraction of predicted boundary pixels within ``tolerance`` (Euclidean) of a true one,
    recall the converse. No boundary in either map scores 1; in exactly one, 0.
    """
    check_positive("tolerance", tolerance, allow_zero=True)
    bt, bp = find_boundaries(truth, mode="thick"), find_boundaries(pred, mode="thick")
    if not bt.any() and not bp.any():
        return 1.0
    if not bt.any() or not bp.any():
        return 0.0
    # distance of every pixel to the nearest boundary pixel of the other map
    to_truth = ndimage.distance_transform_edt(~bt)
    to_pred = ndimage.distance_transform_edt(~bp)
    precision = float((to_truth[bp] <= tolerance).mean())
    recall = float((to_pred[bt] <= tolerance).mean())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def region_metrics(truth: object, pred: object, num_regions: int | None = None,
                   tolerance: float = 2.0) -> dict[str, float]:
    """All region metrics of one predicted label map (see the module docstring).

    Args:
        truth: (H, W) (or (1, H, W), (1, 1, H, W)) integer labels >= 0.
        pred: the same shape; label numbers need not correspond to ``truth``'s.
        num_regions: K, so ``iou_0 .. iou_{K-1}`` are always reported (NaN if absent).
        tolerance: boundary tolerance of ``bf`` in pixels.

    Returns:
        ``accuracy, miou, iou_k, vi, vi_split, vi_merge, are, bf, gce`` as floats.
    """
    truth, pred = _as_2d("truth", truth), _as_2d("pred", pred)
    if truth.shape != pred.shape:
        raise ValueError(f"pred must have the shape of truth {truth.shape}, got {pred.shape}")
    cm = confusion(truth, pred, num_regions)
    perm = best_assignment(cm)
    matched = cm[:, perm]  # column t: the predicted label matched with true label t
    tp = np.diag(matched).astype(np.float64)
    union = matched.sum(axis=0) + matched.sum(axis=1) - tp
    iou = np.divide(tp, union, out=np.full_like(tp, np.nan), where=union > 0)
    split, merge = variation_of_information(truth, pred, ignore_labels=())
    out = {
        "accuracy": float(tp.sum() / cm.sum()),
        "miou": float(np.nanmean(iou)),
        "vi": float(split + merge),
        "vi_split": float(split),
        "vi_merge": float(merge),
        "are": float(adapted_rand_error(truth, pred, ignore_labels=())[0]),
        "bf": boundary_f_score(truth, pred, tolerance),
        "gce": global_consistency_error(cm),
    }
    k = num_regions or len(iou)
    out.update({f"iou_{i}": float(iou[i]) for i in range(k)})
    return out
