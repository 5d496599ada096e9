"""Evaluation: confusion-matrix based segmentation metrics."""

from texseg.evaluation.evaluate import evaluate, evaluate_on_scenes

from texseg.evaluation.metrics import (
    ConfusionMatrix,
    metrics_from_confusion,
    notebook_precision,
    predict_labels,
)

__all__ = ["evaluate", "evaluate_on_scenes", "ConfusionMatrix", "metrics_from_confusion", "notebook_precision", "predict_labels"]
