"""Evaluation: confusion-matrix based segmentation metrics."""

from texseg.evaluation.evaluate import evaluate, evaluate_on_scenes, score_batches
from texseg.evaluation.metrics import (
    MATCHING,
    ConfusionMatrix,
    confusion_matrices,
    metrics_from_confusion,
    notebook_precision,
    predict_labels,
)

__all__ = ["MATCHING", "ConfusionMatrix", "confusion_matrices", "evaluate", "evaluate_on_scenes",
           "metrics_from_confusion", "notebook_precision", "predict_labels", "score_batches"]
