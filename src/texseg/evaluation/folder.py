"""Scoring a model on an annotated image folder: whole images, one confusion matrix."""

from __future__ import annotations

import os

import torch
from torch import nn

from texseg.data.folder import ImageFolderDataset, validate_folder
from texseg.evaluation.metrics import metrics_from_confusion

__all__ = ["evaluate_folder", "evaluate_folder_images"]


@torch.no_grad()
def evaluate_folder(model: nn.Module, root: str | os.PathLike[str], num_regions: int, *,
                    tile: int | None = None, matched: bool = False) -> dict[str, float]:
    """Metrics of ``model`` on every image of a folder, each predicted whole (tiled when large).

    Args:
        model: segmentation model; K = ``num_regions`` (checked against the labels).
        root: folder of images and labels (see :mod:`texseg.data.folder`).
        tile: as :func:`texseg.inference.predict_image`.
        matched: score after the best label matching.

    Returns:
        The metrics of :func:`texseg.evaluation.metrics.metrics_from_confusion` (two regions:
        positive class = label 0, as everywhere in texseg), plus ``images``.
    """
    return evaluate_folder_images(model, root, num_regions, tile=tile, matched=matched)[0]


@torch.no_grad()
def evaluate_folder_images(model: nn.Module, root: str | os.PathLike[str], num_regions: int, *,
                           tile: int | None = None,
                           matched: bool = False) -> tuple[dict[str, float], list[dict[str, float]]]:
    """As :func:`evaluate_folder`, plus each image's own metrics (for an interval over images).

    Returns:
        ``(metrics of every pixel pooled, plus images; one metrics dict per image)``.
    """
    from texseg.evaluation.matching import matched_metrics
    from texseg.inference.predict import labels_from_probs, predict_image

    data = validate_folder(root, num_regions=num_regions)
    dataset = ImageFolderDataset(data, 16, augment=False)
    k = num_regions
    score = matched_metrics if matched else metrics_from_confusion
    cm = torch.zeros(k, k, dtype=torch.long)
    per_image = []
    for i in range(len(dataset)):
        image, labels = dataset.full(i)
        pred = torch.from_numpy(labels_from_probs(predict_image(model, image.numpy().copy(), tile=tile))).long()
        if k == 2:  # the metrics' class 1 is the mask (label 0)
            labels, pred = (labels == 0).long(), (pred == 0).long()
        one = torch.bincount((labels * k + pred).flatten(), minlength=k * k).reshape(k, k)
        per_image.append(score(one))
        cm += one
    return {**score(cm), "images": float(len(dataset))}, per_image
