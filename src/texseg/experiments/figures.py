"""Figures of an experiment: learning curves with bands across seeds, final metric per setting.

All figures use matplotlib's object API (no pyplot state) and are written with
:func:`texseg.plots.save_figure` (atomic PNG).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from texseg.evaluation.names import lower_is_better
from texseg.evaluation.stats import band
from texseg.experiments.report import GroupStats, format_value
from texseg.plots import fitted_suptitle
from texseg.training.rundir import METRICS, read_metrics

# (column of metrics.csv, axis label, log scale)
_CURVES = (("val_iou", "validation IoU (eval mode)", False),
           ("train_loss", "training loss (mean since last eval)", True))
_XAXES = (("step", "iteration"), ("train_seconds", "training time (s, evaluation excluded)"))


def _colors(n: int) -> list:
    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _read_curves(run_dirs: Sequence[Path]) -> list[list[dict[str, float]]]:
    return [read_metrics(d) for d in run_dirs if (d / METRICS).is_file()]


def curves_figure(runs_by_label: dict[str, list[Path]], title: str) -> Figure:
    """2 x 2 grid: validation IoU and training loss against iterations and training time.

    One line per label (the mean across its seeds), with a shaded min-max band when it
    has several seeds. Curves of runs that stopped early (diverged) end where they stopped.

    Args:
        runs_by_label: label -> run directories of its seeds.
        title: figure title.
    """
    fig = Figure(figsize=(12, 8), layout="constrained")
    axes = fig.subplots(2, 2)
    curves = {label: _read_curves(dirs) for label, dirs in runs_by_label.items()}
    for (label, runs), color in zip(curves.items(), _colors(len(curves))):
        for row, (ykey, _, _) in enumerate(_CURVES):
            for col, (xkey, _) in enumerate(_XAXES):
                b = band([([r[xkey] for r in rows], [r[ykey] for r in rows]) for rows in runs if rows])
                if b is None:
                    continue
                ax = axes[row, col]
                ax.plot(b.x, b.mean, color=color, label=label, marker="." if len(b.x) < 30 else None)
                if len(runs) > 1:
                    ax.fill_between(b.x, b.low, b.high, color=color, alpha=0.2, linewidth=0)
    for row, (_, ylabel, logy) in enumerate(_CURVES):
        for col, (_, xlabel) in enumerate(_XAXES):
            ax = axes[row, col]
            ax.set(xlabel=xlabel, ylabel=ylabel)
            if logy and ax.has_data():
                ax.set_yscale("log")
            ax.grid(True, alpha=0.3)
    if any(ax.has_data() for ax in axes.flat):
        axes[0, 0].legend(fontsize="small")
    fitted_suptitle(fig, title + "  (line: mean over seeds; band: min-max across seeds)")
    return fig


def final_figure(ranked: Sequence[GroupStats], metric: str, varied: Sequence[str], title: str) -> Figure:
    """The final held-out metric per setting with its 95% interval.

    Against the value when the experiment varies a single numeric option (log axis for
    ranges over two decades, e.g. learning rates), otherwise as ranked horizontal bars.
    """
    fig = Figure(figsize=(7, max(3.0, 0.45 * len(ranked) + 1.5)), layout="constrained")
    ax = fig.subplots()
    have = [g for g in ranked if metric in g.metrics and g.metrics[metric].n > 0]
    means = np.array([g.metrics[metric].mean for g in have])
    errs = np.array([g.metrics[metric].errors for g in have]).reshape(-1, 2).T  # (2, n): below, above
    seeds = [g.metrics[metric].values for g in have]
    numeric = len(varied) == 1 and all(isinstance(g.values[varied[0]], (int, float)) for g in have) and have
    if numeric:
        xs = np.array([float(g.values[varied[0]]) for g in have])
        order = np.argsort(xs)
        ax.errorbar(xs[order], means[order], yerr=errs[:, order], marker="o", capsize=4, label="mean, 95% interval")
        for x, vals in zip(xs, seeds):  # every seed, so a collapsed one is seen
            ax.scatter([x] * len(vals), vals, s=14, color="0.3", zorder=3)
        if xs.min() > 0 and xs.max() / xs.min() >= 100:
            ax.set_xscale("log")
        ax.set(xlabel=varied[0], ylabel=f"final held-out {metric}")
    else:
        ys = np.arange(len(have))[::-1]
        ax.barh(ys, means, xerr=errs, capsize=4, color=_colors(len(have)), alpha=0.8)
        for y, vals in zip(ys, seeds):
            ax.scatter(vals, [y] * len(vals), s=14, color="0.2", zorder=3)
        ax.set_yticks(ys, [g.label + (" (trivial)" if g.trivial else "") for g in have])
        ax.set_xlabel(f"final held-out {metric}")
        for y, m in zip(ys, means):
            ax.annotate(f"{m:.3f}", (m, y), xytext=(4, 4), textcoords="offset points", fontsize="small")
    if metric != "loss":  # bounded metrics: a wide t-interval must not stretch the axis beyond [0, 1]
        (ax.set_ylim if numeric else ax.set_xlim)(0, 1.05)
    missing = [g.label for g in ranked if g not in have]
    if missing:
        ax.set_title("no completed run: " + ", ".join(missing), fontsize="small")
    ax.grid(True, alpha=0.3)
    better = "lower" if lower_is_better(metric) else "higher"
    interval = "95% t-interval" if metric == "loss" else "95% interval (logit scale)"
    if have and all(g.trivial == g.completed for g in have):  # the picture must not read as a ranking
        title += ": every trial is trivial, no verdict"
    fitted_suptitle(fig, f"{title}\n(mean of completed seeds, dots: each seed, error bar: {interval}; "
                         f"{better} is better)")
    return fig


def heatmap_figure(values: np.ndarray, rows: Sequence[float], cols: Sequence[float], *, row_name: str,
                   col_name: str, label: str, title: str) -> Figure:
    """A heatmap of ``values[i, j]`` (row ``rows[i]``, column ``cols[j]``), each cell annotated.

    Colour range fixed to [0, 1] (metrics such as IoU); NaN cells are left blank.
    """
    fig = Figure(figsize=(1.2 * len(cols) + 2.5, 1.0 * len(rows) + 2.0), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(cols)), [format_value(c) for c in cols])
    ax.set_yticks(range(len(rows)), [format_value(r) for r in rows])
    ax.set(xlabel=col_name, ylabel=row_name)
    for i in range(len(rows)):
        for j in range(len(cols)):
            if np.isfinite(values[i, j]):
                ax.text(j, i, f"{values[i, j]:.3f}", ha="center", va="center",
                        color="black" if values[i, j] > 0.6 else "white")
    fig.colorbar(im, ax=ax, label=label)
    fig.suptitle(title)
    return fig


def scene_grid_figure(images: np.ndarray, mask: np.ndarray, rows: Sequence[float], cols: Sequence[float], *,
                      row_name: str, col_name: str, title: str) -> Figure:
    """One sample image per (row, column) cell, plus the true mask they share.

    Args:
        images: (len(rows), len(cols), H, W) in [0, 1].
        mask: (H, W) region map common to every cell (same seed, same partition).
    """
    nr, nc = len(rows), len(cols)
    fig = Figure(figsize=(2.2 * (nc + 1), 2.2 * nr + 0.6), layout="constrained")
    axes = fig.subplots(nr, nc + 1, squeeze=False)
    for i in range(nr):
        for j in range(nc):
            ax = axes[i, j]
            ax.imshow(images[i, j], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"{col_name}={format_value(cols[j])}", fontsize="small")
            if j == 0:
                ax.set_ylabel(f"{row_name}={format_value(rows[i])}", fontsize="small")
        ax = axes[i, nc]
        ax.axis("off")
    axes[0, nc].imshow(mask, cmap="viridis", interpolation="nearest")
    axes[0, nc].set_title("true mask (all cells)", fontsize="small")
    fig.suptitle(title)
    return fig
