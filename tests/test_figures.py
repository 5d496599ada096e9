"""Every kind of figure fits its canvas: nothing (title, labels, legends) is cut off."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from texseg.evaluation.stats import mean_ci
from texseg.experiments.figures import final_figure, heatmap_figure, scene_grid_figure
from texseg.experiments.report import GroupStats
from texseg.experiments.sweep import RangeTestResult, range_figure
from texseg.plots import run_curves_figure, samples_figure
from texseg.training.config import TrainConfig


def _inside_canvas(fig: Figure) -> None:
    """matplotlib's tight bounding box of everything drawn lies inside the canvas."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    tight = fig.get_tightbbox(canvas.get_renderer())  # inches
    width, height = fig.get_size_inches()
    slack = 0.02
    assert tight.x0 >= -slack and tight.y0 >= -slack, (tight, width, height)
    assert tight.x1 <= width + slack and tight.y1 <= height + slack, (tight, width, height)


def _group(label: str, values: list[float], **varied) -> GroupStats:
    g = GroupStats(label, varied or {"optimizer": label}, Counter({"completed": len(values)}))
    g.metrics = {"iou": mean_ci(values, bounded=True)}
    return g


OPTIMIZERS = [_group(name, [0.4 + 0.1 * i, 0.45 + 0.1 * i]) for i, name in enumerate(("momentum", "rmsprop", "adam",
                                                                                       "sgd"))]
LRS = [_group(f"lr={lr:g}", [0.5, 0.6], lr=lr) for lr in (1e-4, 1e-2, 1.0)]


@pytest.mark.parametrize("make", [
    lambda: final_figure(OPTIMIZERS, "iou", ("optimizer",), "Comparison: optimizer"),
    lambda: final_figure(LRS, "iou", ("lr",), "Learning-rate sweep"),
    lambda: final_figure(OPTIMIZERS[:1], "iou", ("optimizer", "lr"), "Learning-rate selection per optimizer"),
    lambda: heatmap_figure(np.random.default_rng(0).random((2, 3)), [0.2, 1.0], [0.5, 1, 2], row_name="sigma1",
                           col_name="sigma2", label="IoU", title="Held-out IoU per cell (mean over seeds)"),
    lambda: scene_grid_figure(np.zeros((2, 2, 8, 8)), np.zeros((8, 8)), [0.2, 1.0], [0.5, 1.0], row_name="sigma1",
                              col_name="sigma2", title="One scene per cell"),
    lambda: range_figure(RangeTestResult([1e-4, 1e-3, 1e-2], [1.0, 0.8, 2.0], [1.0, 0.9, 1.2], "done", 1e-3, 1e-3),
                         TrainConfig()),
    lambda: run_curves_figure([{"step": 1, "train_seconds": 0.1, "train_loss": 1.0, "val_loss": 1.0, "val_iou": 0.5},
                               {"step": 2, "train_seconds": 0.2, "train_loss": 0.5, "val_loss": 0.7, "val_iou": 0.6}],
                              "cnn"),
    lambda: samples_figure(torch.rand(2, 1, 8, 8), torch.randint(0, 2, (2, 1, 8, 8)), torch.rand(2, 1, 8, 8),
                           suptitle="N=64, partition sigma=12.8, sigma1=0.2, sigma2=1.2, 2 regions, seed 0"),
], ids=["final-bars", "final-lr", "final-one", "heatmap", "scene-grid", "lr-range", "run-curves", "samples"])
def test_every_figure_fits_its_canvas(make) -> None:
    _inside_canvas(make())


def test_label_colours_match_the_overlay_and_every_label_picture_has_a_legend(capsys, tmp_path, monkeypatch):
    from conftest import run_main
    from texseg import plots
    from texseg.inference.predict import _PALETTE

    assert [tuple(round(255 * v) for v in c[:3]) for c in plots.label_colours(4)] == \
        [tuple(int(v) for v in row) for row in _PALETTE[:4]]
    # Two-region masks (1 on Omega_1 = label 0) are drawn as labels: label 0 in label 0's colour.
    mask = torch.ones(1, 1, 4, 4)
    fig = samples_figure(torch.rand(1, 1, 4, 4), mask, mask, masks=True)
    shown = fig.axes[1].get_images()[0]
    assert tuple(shown.to_rgba(shown.get_array())[0, 0]) == plots.label_colours(2)[0]
    legend_texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend_texts == ["label 0 (Omega_1)", "label 1 (Omega_2)"]
    _inside_canvas(fig)

    saved = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: saved.append(fig))  # imported at the call
    code, _, err = run_main(capsys, "generate", "--image-size", "32", "--rows", "1", "--picture",
                            str(tmp_path / "p.png"))
    assert code == 0, err
    assert [t.get_text() for t in saved[0].legends[0].get_texts()][0] == "label 0 (Omega_1)"


def test_final_figure_of_trivial_trials_says_so() -> None:
    trivial = [_group(name, [0.3, 0.31]) for name in ("sgd", "adam")]
    for g in trivial:
        g.trivial = 2
    fig = final_figure(trivial, "iou", ("optimizer",), "Comparison: optimizer")
    assert "every trial is trivial, no verdict" in fig.texts[0].get_text().replace("\n", " ")
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["sgd (trivial)", "adam (trivial)"]
    _inside_canvas(fig)
