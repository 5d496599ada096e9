"""Scoring a model on an annotated image folder: whole images, one confusion matrix."""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from texseg.data.folder import ImageFolderDataset, validate_folder
from texseg.evaluation.metrics import ConfusionMatrix
from texseg.inference.predict import labels_from_probs, model_color, predict_image

__all__ = ["evaluate_folder", "evaluate_folder_images"]


@torch.no_grad()
def evaluate_folder(model: nn.Module, root: str | os.PathLike[str], num_regions: int, *,
                    tile: int | None = None, matching: str = "none") -> dict[str, float]:
    """Metrics of ``model`` on every image of a folder, each predicted whole (tiled when large).

    Args:
        model: segmentation model; K = ``num_regions`` (checked against the labels).
        root: folder of images and labels (see :mod:`texseg.data.folder`).
        tile: as :func:`texseg.inference.predict_image`.
        matching: ``none``, ``image`` (labels matched per image) or ``set`` (once for the
            folder), as :class:`texseg.evaluation.metrics.ConfusionMatrix`.

    Returns:
        The metrics of :func:`texseg.evaluation.metrics.metrics_from_confusion` (two regions:
        positive class = label 0, as everywhere in texseg), plus ``images``.
    """
    return evaluate_folder_images(model, root, num_regions, tile=tile, matching=matching)[0]


@torch.no_grad()
def evaluate_folder_images(model: nn.Module, root: str | os.PathLike[str], num_regions: int, *,
                           tile: int | None = None,
                           matching: str = "none") -> tuple[dict[str, float], list[dict[str, float]]]:
    """As :func:`evaluate_folder`, plus each image's own metrics (for an interval over images).

    Returns:
        ``(metrics of the folder, plus images; one metrics dict per image)`` -- an image's own
        metrics are matched on that image alone whenever ``matching`` is not ``none``.
    """
    data = validate_folder(root, num_regions=num_regions)
    dataset = ImageFolderDataset(data, 16, augment=False, color=model_color(model))  # RGB for colour models
    k = num_regions
    cm = ConfusionMatrix(k, matching)
    per_image = []
    for i in range(len(dataset)):
        image, labels = dataset.full(i)
        pixels = image.numpy()  # (H, W), or (3, H, W) -> (H, W, 3) as predict_image takes colour
        pixels = np.moveaxis(pixels, 0, -1).copy() if pixels.ndim == 3 else pixels.copy()
        pred = torch.from_numpy(labels_from_probs(predict_image(model, pixels, tile=tile))).long()
        if k == 2:  # the metrics' class 1 is the mask (label 0)
            labels, pred = (labels == 0).long(), (pred == 0).long()
        cm.add(pred[None, None], labels[None, None])
        one = ConfusionMatrix(k, "none" if matching == "none" else "image")
        one.add(pred[None, None], labels[None, None])
        per_image.append(one.compute())
    return {**cm.compute(), "images": float(len(dataset))}, per_image
