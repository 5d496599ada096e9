"""Evaluating a model on a held-out set: eval mode, one confusion matrix, one pass."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from texseg.errors import NonFiniteError
from texseg.evaluation.metrics import ConfusionMatrix


@torch.no_grad()
def evaluate(
    model: nn.Module,
    images: Tensor,
    targets: Tensor,
    num_regions: int,
    *,
    batch_size: int = 32,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> dict[str, float]:
    """Metrics of ``model`` on a whole set, always in eval mode (BatchNorm uses running stats).

    Args:
        model: segmentation model returning logits (its train/eval mode is restored after).
        images: (N, 1, H, W) inputs, on the model's device.
        targets: (N, 1, H, W) 0/1 mask (K = 2) or labels (K > 2).
        num_regions: K.
        batch_size: images per forward pass (the result does not depend on it).
        loss_fn: if given, also report its pixel-weighted mean as ``loss``.

    Raises:
        NonFiniteError: the model outputs NaN.

    Returns:
        ``accuracy, iou, dice, precision, recall`` (plus per-class entries for K > 2) and
        ``loss`` when ``loss_fn`` is given.
    """
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(num_regions)
    loss_sum, n = 0.0, 0
    try:
        for start in range(0, images.shape[0], batch_size):
            x, y = images[start:start + batch_size], targets[start:start + batch_size]
            logits = model(x)
            if bool(logits.isnan().any()):
                raise NonFiniteError("the model's outputs contain NaN (diverged weights?)")
            cm.update(logits, y)
            if loss_fn is not None:
                loss_sum += float(loss_fn(logits, y)) * x.shape[0]
                n += x.shape[0]
    finally:
        model.train(was_training)
    metrics = cm.compute()
    if loss_fn is not None:
        metrics["loss"] = loss_sum / n
    return metrics
