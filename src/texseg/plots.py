"""Figures: sample panels, and saving any figure as a PNG file.

Uses matplotlib's object API with the Agg canvas, so nothing depends on (or changes)
the global pyplot state or a display.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from texseg.io import atomic_path


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 100) -> None:
    """Render ``fig`` to a PNG at ``path`` atomically."""
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        # Fixed metadata so the same figure gives the same bytes.
        fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None})


def fitted_suptitle(fig: Figure, text: str, **kwargs: object) -> None:
    """``fig.suptitle(text)``, its lines wrapped at spaces until it fits the figure's width.

    A title wider than the canvas is cut on both sides (it is centred); wrapping keeps
    every word on the picture.
    """
    title = fig.suptitle(text, **kwargs)
    renderer = FigureCanvasAgg(fig).get_renderer()
    limit = fig.bbox.width * 0.96
    width = max(len(line) for line in text.splitlines()) if text else 0
    while width > 10 and title.get_window_extent(renderer).width > limit:
        width = int(width * 0.85)
        title.set_text("\n".join(textwrap.fill(line, width, break_long_words=False) for line in text.splitlines()))


def label_colours(num_regions: int) -> list[tuple[float, float, float, float]]:
    """The colour of each label 0..K-1: matplotlib's tab10, as in ``texseg predict``'s overlays."""
    cmap = colormaps["tab10"]
    return [cmap(k % cmap.N) for k in range(num_regions)]


def label_names(num_regions: int) -> list[str]:
    """Legend entries: ``label 0 (Omega_1)`` ... for the synthetic scenes' regions."""
    return [f"label {k} (Omega_{k + 1})" for k in range(num_regions)]


def samples_figure(
    images: torch.Tensor,
    labels: torch.Tensor,
    predictions: torch.Tensor | None = None,
    *,
    num_regions: int = 2,
    titles: Sequence[str] | None = None,
    suptitle: str | None = None,
    masks: bool = False,
) -> Figure:
    """A grid with one row per sample: input | true labels [| prediction], labels coloured as in overlays.

    Args:
        images: (B, 1, H, W) in [0, 1].
        labels: (B, 1, H, W) region labels (or, with ``masks``, the two-region masks).
        predictions: optional (B, 1, H, W) predicted labels (or masks with ``masks``).
        num_regions: K, to fix the colours of label maps.
        titles: optional per-row titles.
        suptitle: optional figure title.
        masks: two regions given as the notebook's masks (1.0 on Omega_1, label 0): shown as labels.

    Returns:
        The matplotlib Figure, with a legend naming each label's colour.
    """
    cols, rows = (3 if predictions is not None else 2), images.shape[0]
    fig = Figure(figsize=(3.0 * cols, 3.0 * rows + 0.6), layout="constrained")
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False))
    headers = ["input image", "true regions", "prediction"]
    k = max(num_regions, 2)
    colours = ListedColormap(label_colours(k))

    def as_labels(t: torch.Tensor) -> np.ndarray:
        a = t.detach().float().cpu().numpy()
        return 1.0 - a if masks and k == 2 else a

    for r in range(rows):
        picture = images[r].detach().float().cpu()
        # Colour images (3 channels) are shown in colour, (H, W, 3); grey ones with the gray colormap.
        picture = picture.permute(1, 2, 0).clamp(0, 1).numpy() if picture.shape[0] == 3 else picture[0].numpy()
        panels = [(picture, "gray", 0, 1), (as_labels(labels[r, 0]), colours, -0.5, k - 0.5)]
        if predictions is not None:
            panels.append((as_labels(predictions[r, 0]), colours, -0.5, k - 0.5))
        _draw_panels(axes[r], panels, headers if r == 0 else None)
        if titles is not None:
            axes[r, 0].set_ylabel(titles[r])
    handles = [Patch(color=c, label=name) for c, name in zip(label_colours(k), label_names(k))]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(k, 5), fontsize="small")
    if suptitle:
        fitted_suptitle(fig, suptitle)
    return fig


def _draw_panels(axes: Sequence, panels: Sequence[tuple[np.ndarray, object, float, float]],
                 headers: Sequence[str] | None) -> None:
    """Draw one row of panels ``(array, colormap, vmin, vmax)`` without ticks; ``headers`` title the first row."""
    for c, (arr, cmap, lo, hi) in enumerate(panels):
        ax = axes[c]
        ax.imshow(arr, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if headers is not None:
            ax.set_title(headers[c])


def run_curves_figure(rows: Sequence[dict[str, float]], title: str) -> Figure:
    """Learning curves of one run: loss and validation IoU against steps and training time.

    Args:
        rows: the run's metric rows (``step``, ``train_seconds``, ``train_loss``, ``val_loss``, ``val_iou``).
        title: what the run is (e.g. the model name).
    """
    fig = Figure(figsize=(11, 7), layout="constrained")
    axes = fig.subplots(2, 2)
    for col, (key, xlabel) in enumerate([("step", "step"), ("train_seconds", "training time (s)")]):
        xs = [r[key] for r in rows]
        ax = axes[0, col]
        ax.plot(xs, [r["train_loss"] for r in rows], label="train (mean since last eval)")
        ax.plot(xs, [r["val_loss"] for r in rows], label="validation")
        ax.set(yscale="log", xlabel=xlabel, ylabel="loss")
        ax.legend()
        ax.grid(True, alpha=0.3)
        ax = axes[1, col]
        ax.plot(xs, [r["val_iou"] for r in rows], marker=".")
        ax.set(xlabel=xlabel, ylabel="validation IoU (eval mode)")
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"{title}: learning curves")
    return fig
