"""Evaluating a model on a held-out set: eval mode, one confusion matrix, one pass.

One loop (:func:`score_batches`) does the work; :func:`evaluate` feeds it tensors already
in memory (the training loop's validation set) and :func:`evaluate_on_scenes` streams
freshly generated scenes through it, one chunk at a time. Its forward pass is the one of
deployment (:func:`texseg.inference.inferer.forward`, as MONAI's inferer is shared by
validation and deployment): what validation scores is what ``texseg predict`` computes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch
from torch import Tensor, nn

from texseg.data.color import as_channels
from texseg.data.scene import SceneSpec, generate, target_from_labels
from texseg.errors import NonFiniteError
from texseg.evaluation.metrics import ConfusionMatrix
from texseg.inference.inferer import forward, model_device
from texseg.signals import stop_point

# Scenes generated at a time by evaluate_on_scenes (part of what its seed reproduces).
SCENE_CHUNK = 64

LossFn = Callable[[Tensor, Tensor], Tensor]


@torch.no_grad()
def score_batches(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], num_regions: int, *,
                  loss_fn: LossFn | None = None, matching: str = "none", precision: str = "fp32"
                  ) -> dict[str, float]:
    """Metrics of ``model`` over ``(images, targets)`` batches, in eval mode (BatchNorm uses running stats).

    Args:
        model: segmentation model returning logits (its train/eval mode is restored after).
        batches: (B, 1, H, W) inputs and (B, 1, H, W) targets (0/1 mask for K = 2, labels
            otherwise), moved to the model's device here.
        num_regions: K.
        loss_fn: if given, also report its pixel-weighted mean as ``loss``.
        matching: ``none``; ``image``: score after the best matching of predicted to true
            labels on each image (for models whose label numbers are arbitrary; adds
            ``matched = 1.0``); ``set``: one matching for the whole set (``matched_set = 1.0``).
            See :mod:`texseg.evaluation.metrics`.
        precision: of the forward pass (:data:`texseg.inference.inferer.PRECISIONS`); fp32 by
            default, so that a score does not depend on whether the CPU has bf16.

    Raises:
        NonFiniteError: the model outputs NaN.

    Returns:
        ``accuracy, iou, dice, precision, recall`` (plus per-class entries for K > 2), and
        ``loss`` when ``loss_fn`` is given.
    """
    cm = ConfusionMatrix(num_regions, matching)  # checks `matching` before any work
    device = model_device(model)
    was_training = model.training
    model.eval()
    loss_sum, n = 0.0, 0
    try:
        for x, y in batches:
            y = y.to(device)
            # Grey scenes for a colour model are repeated to 3 channels, colour ones for a grey model
            # become luminance (as files are read): evaluate any model on any scene.
            logits = forward(model, as_channels(x, getattr(model, "in_channels", 1)), precision)
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


def evaluate(model: nn.Module, images: Tensor, targets: Tensor, num_regions: int, *, batch_size: int = 32,
             loss_fn: LossFn | None = None, matching: str = "none") -> dict[str, float]:
    """Metrics of ``model`` on a whole in-memory set (see :func:`score_batches`).

    Args:
        images: (N, 1, H, W) inputs; targets: (N, 1, H, W) 0/1 mask (K = 2) or labels (K > 2).
        batch_size: images per forward pass (the result does not depend on it).
    """
    batches = ((images[i:i + batch_size], targets[i:i + batch_size]) for i in range(0, images.shape[0], batch_size))
    return score_batches(model, batches, num_regions, loss_fn=loss_fn, matching=matching)


def scene_batches(spec: SceneSpec, count: int, seed: int, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """``count`` scenes of ``spec`` as (images, targets) batches, drawn in chunks of :data:`SCENE_CHUNK`.

    One CPU generator seeded with ``seed`` draws them, so the set depends on ``seed`` and
    ``count`` only, and only one chunk is in memory at a time. A stop signal ends the
    stream between two chunks.
    """
    gen = torch.Generator().manual_seed(seed)
    k = spec.num_regions
    for start in range(0, count, SCENE_CHUNK):
        stop_point()
        images, labels = generate(spec, min(SCENE_CHUNK, count - start), generator=gen)
        targets = target_from_labels(labels, k)
        for i in range(0, images.shape[0], batch_size):
            yield images[i:i + batch_size], targets[i:i + batch_size]


def evaluate_on_scenes(model: nn.Module, spec: SceneSpec, count: int, seed: int, *, batch_size: int = 32,
                       device: torch.device | None = None, matching: str = "none") -> dict[str, float]:
    """Metrics of ``model`` on ``count`` fresh scenes of ``spec``, streamed (see :func:`scene_batches`).

    Args:
        model: segmentation model (logits out); evaluated in eval mode.
        spec: the scenes to draw; K = ``spec.num_regions`` must match the model.
        count: number of scenes.
        seed: seed of the held-out set.
        batch_size: images per forward pass.
        device: where to run (default: the model's device; the model is moved there).
        matching: as :func:`score_batches` (``image`` for a model trained with arbitrary labels).
    """
    if device is not None:
        model.to(device)
    return score_batches(model, scene_batches(spec, count, seed, batch_size), spec.num_regions, matching=matching)
