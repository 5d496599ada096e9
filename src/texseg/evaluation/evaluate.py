"""Evaluating a model on a held-out set: eval mode, one confusion matrix, one pass."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from texseg.data.scene import SceneSpec, generate, target_from_labels
from texseg.errors import NonFiniteError
from texseg.evaluation.metrics import ConfusionMatrix

# Scenes generated at a time by evaluate_on_scenes (part of what its seed reproduces).
SCENE_CHUNK = 64


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


@torch.no_grad()
def evaluate_on_scenes(
    model: nn.Module,
    spec: SceneSpec,
    count: int,
    seed: int,
    *,
    batch_size: int = 32,
    device: torch.device | None = None,
) -> dict[str, float]:
    """Metrics of ``model`` on ``count`` fresh scenes of ``spec``, streamed.

    Scenes are drawn in chunks of :data:`SCENE_CHUNK` from one CPU generator seeded with
    ``seed`` (so the set depends on ``seed`` and ``count`` only), and only one chunk is
    in memory at a time; metrics come from one confusion matrix over all of them.

    Args:
        model: segmentation model (logits out); evaluated in eval mode.
        spec: the scenes to draw; K = ``spec.num_regions`` must match the model.
        count: number of scenes.
        seed: seed of the held-out set.
        batch_size: images per forward pass.
        device: where to run (default: the model's device).
    """
    device = device or next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    k = spec.num_regions
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(k)
    try:
        for start in range(0, count, SCENE_CHUNK):
            images, labels = generate(spec, min(SCENE_CHUNK, count - start), generator=gen)
            targets = target_from_labels(labels, k)
            for i in range(0, images.shape[0], batch_size):
                logits = model(images[i:i + batch_size].to(device))
                if bool(logits.isnan().any()):
                    raise NonFiniteError("the model's outputs contain NaN (diverged weights?)")
                cm.update(logits, targets[i:i + batch_size].to(device))
    finally:
        model.train(was_training)
    return cm.compute()
