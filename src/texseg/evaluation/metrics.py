"""Pixel metrics for texture segmentation, computed from one confusion matrix.

Metrics are derived once from a confusion matrix accumulated over the whole
evaluation set (:class:`ConfusionMatrix`), never averaged over batches, so the
result does not depend on the batch size or on how pixels are split into batches.

For a class ``k`` with ``TP`` (pixels of class ``k`` predicted ``k``), ``FP``
(predicted ``k``, truly another class), ``FN`` (truly ``k``, predicted another
class) and ``TN`` (all other pixels)::

    accuracy  = (TP + TN) / (TP + FP + FN + TN)   # K > 2: trace(cm) / sum(cm)
    iou       = TP / (TP + FP + FN)                # Jaccard index
    dice      = 2 TP / (2 TP + FP + FN)            # == F1 score
    precision = TP / (TP + FP)
    recall    = TP / (TP + FN)                     # sensitivity

The headline for every K is ``iou``: the **mean IoU over the regions** (predicting one
region everywhere scores about half of it, never a good-looking number). Two regions
(``K = 2``, where the positive class 1 of the matrix is Omega_1 = label 0):
``iou_omega1`` is Omega_1's own IoU (the notebook's IoU), ``dice, precision, recall``
are Omega_1's, ``iou_0``/``iou_1`` the IoU of label 0 (Omega_1) and label 1.
``K > 2``: the macro averages ``mean_iou, mean_dice, mean_precision, mean_recall``
(unweighted over the K classes), per-class ``iou_k, dice_k, precision_k, recall_k``
and the aliases ``iou, dice, precision, recall`` equal to the macro averages.

Every K also gets the trivial baseline and a flag for it: ``trivial_accuracy`` and
``trivial_iou`` are what a model that predicts the most common true region everywhere
would score; ``majority_prediction`` is the share of pixels the model puts in the one
region it predicts most (1.0 for a constant prediction).

Arbitrary label numbers (``matching``): ``"image"`` matches each image's predicted labels
to its true labels on its own (:func:`texseg.evaluation.matching.match_images`), scores
each image on its own and averages every metric over the images (the mean over images of
the per-image matched mIoU, as the benchmark scores, :mod:`texseg.evaluation.region_metrics`):
a region absent from both an image's truth and its matched prediction is left out of that
image's means (not a perfect 1.0), the trivial baseline is the constant prediction matched
per image (each image's largest region: its share over the regions present), and
``majority_prediction`` the mean share of each image's most predicted region. Up to
rounding the result does not depend on the batch size. ``"set"`` matches once, on the
matrix summed over the set (it only undoes a swap made on every image alike). The metrics
say which: ``matched = 1.0`` (per image) or ``matched_set = 1.0``.

Empty denominators: a class absent from both truth and prediction is segmented
perfectly, so all its metrics are 1.0. Otherwise a 0/0 is a miss and counts 0.0:
precision with no predicted pixels is 0.0 when the class is present in the truth,
recall with no true pixels is 0.0 when the class was predicted. (IoU and Dice only
have a 0/0 in the "absent from both" case.)

The lab notebook's formula ``Precision = TP / (FP + FP)`` is a typo for
``TP / (TP + FP)``; its reported "precision" was a different quantity altogether,
see :func:`notebook_precision`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from texseg._validate import check_choice, check_int
from texseg.evaluation.matching import match_confusion, match_images

__all__ = ["MATCHING", "ConfusionMatrix", "confusion_matrices", "matched_metrics", "metrics_from_confusion",
           "notebook_precision", "predict_labels"]

# How predicted label numbers are matched to the true ones before scoring (see the module docstring).
MATCHING = ("none", "image", "set")


def predict_labels(logits: Tensor) -> Tensor:
    """Hard labels from logits.

    Args:
        logits: (B, C, H, W). C = 1: logit of the positive class, thresholded at 0
            (probability 0.5). C > 1: one logit per class, argmax over channels.

    Returns:
        (B, 1, H, W) int64 labels in ``0..max(C, 2) - 1``.
    """
    if not isinstance(logits, Tensor) or logits.ndim != 4:
        raise ValueError(f"logits must be a 4-D tensor (B, C, H, W), got {_describe(logits)}")
    if logits.shape[1] == 1:
        return (logits > 0).long()
    return logits.argmax(dim=1, keepdim=True)


def _describe(x: object) -> str:
    return f"shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__


def confusion_matrices(pred: Tensor, target: Tensor, num_classes: int, *, per_image: bool = False) -> Tensor:
    """Confusion counts of hard labels, one ``torch.bincount`` for the whole batch.

    Args:
        pred, target: (B, ...) int labels in ``0..K-1``, the same shape (not checked here).
        num_classes: K.
        per_image: one matrix per image instead of their sum.

    Returns:
        (K, K) int64, or (B, K, K) with ``per_image``; rows = true, columns = predicted.
    """
    k = num_classes
    index = target.long() * k + pred.long()
    if not per_image:
        return torch.bincount(index.flatten(), minlength=k * k).reshape(k, k)
    b = pred.shape[0]
    index = index.reshape(b, -1) + (torch.arange(b, device=index.device) * (k * k))[:, None]
    return torch.bincount(index.flatten(), minlength=b * k * k).reshape(b, k, k)


def _as_label_map(name: str, target: object, shape: torch.Size, num_classes: int) -> Tensor:
    """Check a (B,1,H,W) / (B,H,W) target against ``shape`` and return it as int64 (B,1,H,W)."""
    if not isinstance(target, Tensor):
        raise ValueError(f"{name} must be a tensor, got {type(target).__name__}")
    if target.ndim == 3:
        target = target.unsqueeze(1)
    if target.shape != shape:
        raise ValueError(
            f"{name} must have shape {tuple(shape)} or {(shape[0], *shape[2:])}, "
            f"got {tuple(target.shape)}"
        )
    if num_classes == 2:
        # Binary masks are usually float; accept any dtype but only exact 0/1 values.
        if not bool(((target == 0) | (target == 1)).all()):
            raise ValueError(f"{name} must be a 0/1 mask for num_classes=2")
    else:
        if target.is_floating_point() or target.is_complex():
            raise ValueError(
                f"{name} must be an integer label map for num_classes={num_classes}, got {target.dtype}"
            )
        if target.numel() and (int(target.min()) < 0 or int(target.max()) >= num_classes):
            raise ValueError(f"{name} values must be in [0, {num_classes - 1}]")
    return target.long()


class ConfusionMatrix:
    """Accumulates one (K, K) confusion matrix over an evaluation set.

    Rows are true classes, columns predicted classes. The state lives on the device of
    the logits passed to :meth:`update`.

    Args:
        num_classes: number of regions K >= 2 (K = 2 expects C = 1 logits, K > 2 expects C = K).
        matching: ``none`` (label k is region k), ``image`` (labels matched per image, for
            models whose label numbers are arbitrary) or ``set`` (matched once over the set);
            see the module docstring.

    Example::

        cm = ConfusionMatrix(2)
        for images, masks in loader:
            cm.update(model(images), masks)
        metrics = cm.compute()
    """

    def __init__(self, num_classes: int, matching: str = "none") -> None:
        self.num_classes = check_int("num_classes", num_classes, minimum=2)
        self.matching = check_choice("matching", matching, MATCHING)
        self.reset()

    def reset(self) -> None:
        """Forget all accumulated counts."""
        self._matrix: Tensor | None = None
        # matching "image": the metrics' names, and per metric the sum over images of its finite values
        # and how many there were
        self._names: list[str] = []
        self._sums = torch.zeros(0, dtype=torch.float64)
        self._counts = torch.zeros(0, dtype=torch.long)

    @torch.no_grad()
    def update(self, logits: Tensor, target: Tensor) -> None:
        """Add one batch.

        Args:
            logits: (B, C, H, W) with C = 1 for K = 2, else C = K.
            target: (B, 1, H, W) or (B, H, W); 0/1 mask for K = 2, int labels 0..K-1 otherwise.
        """
        k = self.num_classes
        channels = 1 if k == 2 else k
        if not isinstance(logits, Tensor) or logits.ndim != 4 or logits.shape[1] != channels:
            raise ValueError(
                f"logits must have shape (B, {channels}, H, W) for num_classes={k}, "
                f"got {_describe(logits)}"
            )
        if logits.is_floating_point() and bool(logits.isnan().any()):
            # NaN would silently become class 0 (threshold) or an arbitrary argmax.
            raise ValueError("logits must not contain NaN")
        target = _as_label_map("target", target, logits.shape[:1] + (1,) + logits.shape[2:], k)
        self.add(predict_labels(logits), target.to(logits.device))

    @torch.no_grad()
    def add(self, pred: Tensor, target: Tensor) -> None:
        """Add hard labels: ``pred`` and ``target`` (B, 1, H, W) int in 0..K-1, on one device (unchecked).

        For K = 2 class 1 is the positive class (texseg's mask, label 0), as in :meth:`update`.
        """
        k = self.num_classes
        if self.matching == "image":
            matched, _ = match_images(confusion_matrices(pred, target, k, per_image=True))
            batch = matched.sum(dim=0)
            # Each image scored on its own, as the benchmark does; summed here, averaged in compute().
            per_image = _metric_tensors(matched.cpu().double(), leave_out_absent=True)
            values = torch.stack(list(per_image.values()))  # (metrics, B)
            finite = torch.isfinite(values)
            if not self._names:
                self._names = list(per_image)
                self._sums = torch.zeros(len(self._names), dtype=torch.float64)
                self._counts = torch.zeros(len(self._names), dtype=torch.long)
            self._sums += torch.where(finite, values, 0.0).sum(dim=1)
            self._counts += finite.sum(dim=1)
        else:
            batch = confusion_matrices(pred, target, k)
        self._matrix = batch if self._matrix is None else self._matrix.to(batch.device) + batch

    @property
    def matrix(self) -> Tensor:
        """(K, K) int64 counts, rows = true class, cols = predicted class (a copy; with
        ``matching="image"`` the sum of the per-image matched matrices)."""
        if self._matrix is None:
            return torch.zeros(self.num_classes, self.num_classes, dtype=torch.long)
        return self._matrix.clone()

    def compute(self) -> dict[str, float]:
        """Metrics of the accumulated matrix under the matching chosen, see :func:`metrics_from_confusion`."""
        if self._matrix is None or int(self._matrix.sum()) == 0:
            raise RuntimeError("ConfusionMatrix.compute() called before any pixel was passed to update()")
        if self.matching == "set":
            return {**matched_metrics(self._matrix), "matched_set": 1.0}
        if self.matching == "image":
            means = (self._sums / self._counts).tolist()  # 0/0: NaN, a metric no image defines
            return {**dict(zip(self._names, means)), "matched": 1.0}
        return metrics_from_confusion(self._matrix)


def matched_metrics(cm: Tensor) -> dict[str, float]:
    """Metrics of one confusion matrix after its best label matching (one assignment for all its pixels).

    Args:
        cm: (K, K) counts, rows = true, columns = predicted (e.g. ``ConfusionMatrix.matrix``).

    Returns:
        :func:`metrics_from_confusion` of the matched matrix.
    """
    matched, _ = match_confusion(cm)
    return metrics_from_confusion(matched)


def _safe_ratio(num: Tensor, den: Tensor, empty: Tensor) -> Tensor:
    """``num / den``; 0/0 gives 1.0 where ``empty`` (class absent everywhere), else 0.0."""
    fallback = empty.to(num.dtype)
    return torch.where(den > 0, num / den.clamp(min=1), fallback)


def metrics_from_confusion(cm: Tensor) -> dict[str, float]:
    """Segmentation metrics from a confusion matrix (rows = true, cols = predicted).

    Args:
        cm: (K, K) non-negative counts, K >= 2.

    Returns:
        K = 2: ``iou`` (mean over both regions), ``iou_omega1, dice, precision, recall`` of
        class 1 (Omega_1), ``iou_0, iou_1`` per label, ``accuracy`` and the trivial baselines.
        K > 2: ``accuracy``, ``mean_*`` and ``iou/dice/precision/recall`` (macro means),
        and per-class ``iou_k, dice_k, precision_k, recall_k``. See the module docstring.
    """
    if not isinstance(cm, Tensor) or cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] < 2:
        raise ValueError(f"cm must be a square (K, K) tensor with K >= 2, got {_describe(cm)}")
    cm = cm.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(cm).all()) or bool((cm < 0).any()):
        raise ValueError("cm must contain finite non-negative counts")
    if cm.sum() == 0:
        raise ValueError("cm must contain at least one count, got an all-zero matrix")
    return {name: float(v[0]) for name, v in _metric_tensors(cm[None]).items()}


def _metric_tensors(cm: Tensor, *, leave_out_absent: bool = False) -> dict[str, Tensor]:
    """The metrics of :func:`metrics_from_confusion` for each of B matrices.

    Args:
        cm: (B, K, K) float64 counts on the CPU, none all zero (unchecked).
        leave_out_absent: a class absent from both truth and prediction is NaN (left out of the
            macro means) instead of a perfect 1.0, and the trivial IoU is the majority share over
            the classes present in the truth: how the benchmark scores one image.

    Returns:
        Metric name -> (B,) float64.
    """
    total = cm.sum(dim=(-2, -1))
    tp = cm.diagonal(dim1=-2, dim2=-1)
    fp = cm.sum(dim=-2) - tp
    fn = cm.sum(dim=-1) - tp
    absent = (tp + fp + fn) == 0  # class neither in truth nor in prediction
    per_class = {
        "iou": _safe_ratio(tp, tp + fp + fn, absent),
        "dice": _safe_ratio(2 * tp, 2 * tp + fp + fn, absent),
        "precision": _safe_ratio(tp, tp + fp, absent),
        "recall": _safe_ratio(tp, tp + fn, absent),
    }
    k = cm.shape[-1]
    classes: Tensor | int = k
    if leave_out_absent:
        per_class = {name: v.masked_fill(absent, float("nan")) for name, v in per_class.items()}
        classes = (cm.sum(dim=-1) > 0).sum(dim=-1)
    majority_truth = cm.sum(dim=-1).amax(dim=-1) / total
    out = {"accuracy": tp.sum(dim=-1) / total, "trivial_accuracy": majority_truth,
           "trivial_iou": majority_truth / classes, "majority_prediction": cm.sum(dim=-2).amax(dim=-1) / total}
    if k == 2:
        out.update({name: v[:, 1] for name, v in per_class.items()})
        out["iou_omega1"] = out["iou"]
        out["iou"] = per_class["iou"].nanmean(dim=-1)
        out["iou_0"], out["iou_1"] = per_class["iou"][:, 1], per_class["iou"][:, 0]  # label 0 = Omega_1
        return out
    for name, v in per_class.items():
        mean = v.nanmean(dim=-1)
        out[f"mean_{name}"] = mean
        out[name] = mean
    for name, v in per_class.items():
        out.update({f"{name}_{i}": v[:, i] for i in range(k)})
    return out


def notebook_precision(probabilities: Tensor, mask: Tensor) -> float:
    """The lab notebook's "precision", kept only to reproduce its numbers.

    Probabilities below 0.1 are set to 0 and above 0.9 to 1; the result is the fraction
    of pixels where this clipped value *exactly* equals the 0/1 mask. Pixels with a
    probability in [0.1, 0.9] therefore always count as wrong. This is neither
    precision (TP / (TP + FP)) nor accuracy at threshold 0.5: it is an accuracy in which
    every unconfident pixel is an error, so it rewards saturating the sigmoid. The notebook also
    averaged it over training batches with the model in train mode, so its numbers
    are not comparable to :func:`metrics_from_confusion` on a held-out set.

    Args:
        probabilities: (B, 1, H, W) probabilities of the positive class, in [0, 1].
        mask: (B, 1, H, W) or (B, H, W) 0/1 mask.

    Returns:
        Fraction of matching pixels in [0, 1].
    """
    if not isinstance(probabilities, Tensor) or probabilities.ndim != 4 or probabilities.shape[1] != 1:
        raise ValueError(f"probabilities must have shape (B, 1, H, W), got {_describe(probabilities)}")
    if probabilities.numel() == 0:
        raise ValueError("probabilities must not be empty")
    p = probabilities.detach()
    p = p if p.is_floating_point() else p.float()
    if not bool(((p >= 0) & (p <= 1)).all()):  # also rejects NaN
        raise ValueError("probabilities must be in [0, 1] (apply sigmoid to logits first)")
    target = _as_label_map("mask", mask, p.shape, 2).to(p.device, p.dtype)
    clipped = torch.where(p < 0.1, 0.0, torch.where(p > 0.9, 1.0, p))
    return float((clipped == target).double().mean())
