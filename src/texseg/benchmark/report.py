"""The benchmark's outputs: leaderboard.csv, leaderboard.md, one bar figure per suite and
a qualitative panel per suite (image | truth | each segmenter, on the same images)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from texseg.benchmark.runner import BenchmarkResult, Cell
from texseg.evaluation.matching import best_assignment
from texseg.evaluation.names import BASELINE, BENCHMARK_TABLE_METRICS, is_bounded, metric_label
from texseg.evaluation.names import BENCHMARK_FIGURE_METRICS as _FIGURE_METRICS
from texseg.evaluation.names import REGION_LABELS as SUMMARY_METRICS
from texseg.evaluation.region_metrics import confusion
from texseg.io import atomic_write_text, slug
from texseg.plots import save_figure
from texseg.result_file import write_result

__all__ = ["SUMMARY_METRICS", "cell_row", "is_bounded", "leaderboard_markdown", "metric_label", "write_leaderboard"]

_MD_METRICS = BENCHMARK_TABLE_METRICS  # the main table of leaderboard.md and report.html

MATCHING_NOTE = ("Label numbers of unsupervised methods are arbitrary: mIoU, per-region IoU and accuracy are "
                 "computed after matching predicted to true labels (Hungarian assignment on each image's "
                 "confusion matrix); VI, adapted Rand error, boundary F and GCE do not depend on label numbers.")


def _all_cells(result: BenchmarkResult) -> list[Cell]:
    """Every cell, each suite's constant baseline after its segmenters."""
    return [c for s in result.suites for c in [*(c for c in result.cells if c.suite == s.name),
                                                *(b for b in result.baselines if b.suite == s.name)]]


def _metric_order(cells: list[Cell]) -> list[str]:
    regions = max((c.num_regions for c in cells), default=2)
    return list(SUMMARY_METRICS) + [f"iou_{k}" for k in range(regions)]


def cell_row(cell: Cell, metrics: list[str]) -> dict[str, object]:
    """One CSV row: the cell's identity, every metric's mean and 95% interval, and speed."""
    row: dict[str, object] = {"segmenter": cell.segmenter, "suite": cell.suite, "num_regions": cell.num_regions,
                              "status": cell.status, "note": cell.note, "images": cell.images}
    ivs = cell.intervals
    for m in metrics:
        iv = ivs.get(m)
        row[m], row[f"{m}_low"], row[f"{m}_high"] = (
            ("", "", "") if iv is None or iv.n == 0 else
            (f"{iv.mean:.6g}", "" if math.isnan(iv.low) else f"{iv.low:.6g}",
             "" if math.isnan(iv.high) else f"{iv.high:.6g}"))
    done = cell.status == "done" and cell.seconds > 0
    row["images_per_s"] = f"{cell.images / cell.seconds:.4g}" if done else ""
    row["s_per_megapixel"] = f"{cell.seconds / (cell.pixels / 1e6):.4g}" if done else ""
    row["fit_s"] = f"{cell.fit_seconds:.4g}" if cell.fit_seconds else ""
    return row


def _rows(result: BenchmarkResult) -> list[dict[str, object]]:
    metrics = _metric_order(result.cells)
    return [cell_row(c, metrics) for c in _all_cells(result)]


def _csv(rows: list[dict[str, object]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


LEADERBOARD_TITLE = "Benchmark leaderboard"
LEADERBOARD_INTRO = ("Each value is the mean over the suite's images and the 95% percentile bootstrap interval of "
                     "that mean (the images resampled, so it stays inside [0, 1] for metrics there; ± its half-width "
                     "for VI; under 10 images, t-intervals). "
                     f"The row **{BASELINE}** is what a model that learnt nothing scores: a method must "
                     "beat it to have segmented anything. " + MATCHING_NOTE)


def leaderboard_markdown(result: BenchmarkResult) -> str:
    """One table per suite: mean ± 95% half-interval over images, speed, and why cells are empty."""
    lines = [f"# {LEADERBOARD_TITLE}", "", LEADERBOARD_INTRO, ""]
    if result.interrupted:
        lines += ["**The run was stopped: some cells are missing.**", ""]
    for suite in result.suites:
        lines += [f"## {suite.name}", "", f"{suite.description}; {suite.count} images, K = {suite.num_regions}.", ""]
        header = ["segmenter"] + [metric_label(m) for m in _MD_METRICS] + ["images/s", "s/megapixel", "note"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for cell in (c for c in _all_cells(result) if c.suite == suite.name):
            ivs = cell.intervals
            values = [ivs[m].format(3) if m in ivs else "—" for m in _MD_METRICS]
            speed = (["%.3g" % (cell.images / cell.seconds), "%.3g" % (cell.seconds / (cell.pixels / 1e6))]
                     if cell.status == "done" and cell.seconds > 0 else ["—", "—"])
            note = cell.note if cell.status != "done" or cell.note else ""
            name = f"**{cell.segmenter}**" if cell.segmenter == BASELINE else cell.segmenter
            lines.append("| " + " | ".join([name, *values, *speed, note]) + " |")
        lines.append("")
    return "\n".join(lines)


def _bar_figure(result: BenchmarkResult, suite_name: str) -> Figure | None:
    cells = [c for c in result.cells if c.suite == suite_name and c.status == "done"]
    if not cells:
        return None
    fig = Figure(figsize=(3.2 * len(_FIGURE_METRICS), 0.5 * len(cells) + 2.2), layout="constrained")
    axes = fig.subplots(1, len(_FIGURE_METRICS), sharey=True)
    y = np.arange(len(cells))
    for ax, metric in zip(axes, _FIGURE_METRICS):
        ivs = [c.intervals[metric] for c in cells]
        means = np.array([iv.mean for iv in ivs])
        err = np.array([iv.errors for iv in ivs]).T  # asymmetric for [0, 1] metrics: never past a bound
        ax.barh(y, means, xerr=err, color="tab:blue", alpha=0.8, capsize=3)
        floor = next((b for b in result.baselines if b.suite == suite_name and metric in b.per_image), None)
        if floor is not None:  # what one label everywhere scores: bars near it learnt nothing
            ax.axvline(float(np.mean(floor.per_image[metric])), color="0.3", linestyle="--", linewidth=1,
                       label=BASELINE)
        ax.set_title(metric_label(metric))
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, [c.segmenter for c in cells])
    if result.baselines:
        axes[0].legend(loc="lower left", fontsize="small")
    axes[0].invert_yaxis()
    fig.suptitle(f"suite {suite_name}: mean and 95% interval over images")
    return fig


def _matched(truth: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """``pred`` relabelled with the true labels it matches best, so colours agree."""
    perm = best_assignment(confusion(truth, pred, k))
    inverse = np.empty(len(perm), dtype=np.int64)
    inverse[perm] = np.arange(len(perm))
    return inverse[pred]


def _panel_figure(result: BenchmarkResult, suite_index: int) -> Figure | None:
    suite = result.suites[suite_index]
    cells = [c for c in result.cells if c.suite == suite.name and c.status == "done" and c.prediction_file]
    if not cells:
        return None
    preds = [np.load(c.prediction_file, allow_pickle=False) for c in cells]
    rows = min(len(p) for p in preds)
    images, labels = suite.load("test", rows)
    # Colour suites (3 channels) are shown in colour, (rows, H, W, 3).
    images = images[:rows].permute(0, 2, 3, 1).numpy() if images.shape[1] == 3 else images[:rows, 0].numpy()
    labels = labels[:rows, 0].numpy()
    cols = 2 + len(cells)
    fig = Figure(figsize=(2.2 * cols, 2.3 * rows + 0.4), layout="constrained")
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False))
    vmax = max(suite.num_regions - 1, 1)
    for r in range(rows):
        panels = [(images[r], "gray", 1, "image"), (labels[r], "viridis", vmax, "truth")]
        panels += [(_matched(labels[r], p[r].astype(np.int64), suite.num_regions), "viridis", vmax, c.segmenter)
                   for c, p in zip(cells, preds)]
        for ax, (arr, cmap, hi, title) in zip(axes[r], panels):
            ax.imshow(arr, cmap=cmap, vmin=0, vmax=hi, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=9)
    fig.suptitle(f"suite {suite.name}: predictions with labels matched to the truth")
    return fig


def write_leaderboard(result: BenchmarkResult) -> list[Path]:
    """Write leaderboard.csv, result.json, leaderboard.md, bars-<suite>.png and panel-<suite>.png into ``result.out``.

    ``result.json`` (kind ``benchmark``) holds the leaderboard's rows (as in leaderboard.csv), the suites and
    the page's words; report.html is rendered from it (``texseg.report.write_report(result.out)``).

    Returns:
        The paths written.
    """
    out = result.out
    rows = _rows(result)
    written = [out / "leaderboard.csv", out / "leaderboard.md"]
    atomic_write_text(written[0], _csv(rows))
    written.append(write_result(out, "benchmark", {
        "title": LEADERBOARD_TITLE, "description": [LEADERBOARD_INTRO], "interrupted": result.interrupted,
        "suites": [{"name": x.name, "description": x.description, "count": x.count, "num_regions": x.num_regions}
                   for x in result.suites], "segmenters": list(result.segmenter_names), "rows": rows}))
    atomic_write_text(written[1], leaderboard_markdown(result))
    for i, suite in enumerate(result.suites):
        for prefix, fig in (("bars", _bar_figure(result, suite.name)), ("panel", _panel_figure(result, i))):
            if fig is not None:
                path = out / f"{prefix}-{slug(suite.name)}.png"
                save_figure(fig, path)
                written.append(path)
    return written
