"""The one place for metric names, their order, which way is better, and the trivial baselines.

Every output (summary.md, leaderboard.md, report.html, figures, the terminal) takes its
metric names, columns and baseline wording from here, so a table of a run, an experiment
and a benchmark can never disagree on what a metric is called or which way it improves.

Two families of metrics: a run's validation metrics (:mod:`texseg.evaluation.metrics`,
label numbers fixed: ``iou``, ``dice``, ...) and the benchmark's region metrics
(:mod:`texseg.evaluation.region_metrics`, label numbers matched: ``miou``, ``vi``, ...).
"""

from __future__ import annotations

__all__ = [
    "BASELINE", "BENCHMARK_FIGURE_METRICS", "BENCHMARK_TABLE_METRICS", "BOUNDED", "METRIC_ORDER", "REGION_LABELS",
    "TABLE_METRICS", "TRIVIAL", "TRIVIAL_NAME", "is_bounded", "lower_is_better", "metric_label",
]

# ------------------------------------------------------------------------- a run's validation metrics
#: A run's validation metrics in reading order (per-region ``iou_0``, ... follow ``iou``).
METRIC_ORDER = ("iou", "dice", "accuracy", "precision", "recall", "loss")
#: The columns of an experiment's ranked table (summary.md and report.html).
TABLE_METRICS = ("iou", "dice", "accuracy", "loss")
#: Metric -> the key of what predicting the most common true region everywhere scores.
TRIVIAL = {"iou": "trivial_iou", "accuracy": "trivial_accuracy"}
#: That trivial prediction, in the words of every run and experiment output.
TRIVIAL_NAME = "one region everywhere"

# --------------------------------------------------------------------------- the benchmark's metrics
#: The constant segmenter every leaderboard shows, so a collapsed model's score reads as what it is.
BASELINE = "one label everywhere"
#: Region metric -> its name in every benchmark output; the arrow says which direction is better.
REGION_LABELS = {"miou": "mIoU ↑", "accuracy": "accuracy ↑", "bf": "boundary F ↑", "vi": "VI ↓",
                 "vi_split": "VI split ↓", "vi_merge": "VI merge ↓", "are": "adapted Rand err ↓", "gce": "GCE ↓"}
#: The main table of leaderboard.md and report.html, in this order.
BENCHMARK_TABLE_METRICS = ("miou", "accuracy", "bf", "vi", "are", "gce")
#: The bars of the benchmark's figure.
BENCHMARK_FIGURE_METRICS = ("miou", "accuracy", "bf", "vi")
#: Metrics that live in [0, 1]: over seeds their intervals are logit t-intervals mapped back, over images
#: bootstrap intervals inside [0, 1] (VI is unbounded).
BOUNDED = ("miou", "accuracy", "bf", "are", "gce")

_LOWER_IS_BETTER = frozenset({"loss", "vi", "vi_split", "vi_merge", "are", "gce"})


def lower_is_better(metric: str) -> bool:
    """Whether a lower value of ``metric`` is better (the loss, VI, adapted Rand error, GCE)."""
    return metric in _LOWER_IS_BETTER


def is_bounded(metric: str) -> bool:
    """Whether a region metric lives in [0, 1] (per-region IoUs ``iou_<k>`` included)."""
    return metric in BOUNDED or metric.startswith("iou_")


def metric_label(metric: str) -> str:
    """The one name of a region metric in every output (leaderboard.md, report.html, figures): ``boundary F ↑``."""
    if metric.startswith("iou_") and metric[4:].isdigit():
        return f"IoU region {metric[4:]} ↑"
    return REGION_LABELS.get(metric, metric)
