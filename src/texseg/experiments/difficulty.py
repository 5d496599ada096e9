"""How hard is a scene? Held-out IoU over a grid of texture widths (sigma1, sigma2).

Two ways to fill the grid: train one model per cell with a fixed budget (an ordinary
:class:`Experiment`), or evaluate one saved model on every cell (``--model-dir``). Every
cell's scenes are drawn from the same seed, so all cells share their partitions and
differ only in texture: the comparison between cells is paired.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from texseg.checkpoint import load_model
from texseg.data.scene import SceneSpec, generate, target_from_labels
from texseg.device import resolve_device
from texseg.evaluation import evaluate
from texseg.experiments.experiment import Experiment
from texseg.experiments.figures import heatmap_figure, scene_grid_figure
from texseg.experiments.report import GroupStats, format_value, write_results_csv, write_table_summary
from texseg.experiments.runner import Trial
from texseg.experiments.sweep import budget_text, check_values
from texseg.plots import save_figure
from texseg.result_file import write_result
from texseg.training.config import TrainConfig, override_scene

HEATMAP_PNG, SCENES_PNG = "heatmap.png", "scenes.png"


def cell_label(sigma1: float, sigma2: float) -> str:
    return f"sigma1={sigma1:g},sigma2={sigma2:g}"


def difficulty_experiment(base: TrainConfig, sigma1s: Sequence[float], sigma2s: Sequence[float],
                          seeds: Sequence[int], command: str = "") -> Experiment:
    """One model per (sigma1, sigma2) cell and seed, trained with ``base``'s budget."""
    sigma1s, sigma2s = check_values("sigma1s", sigma1s), check_values("sigma2s", sigma2s)
    if base.regions != 2 or base.sigmas is not None:
        raise ValueError("a difficulty grid has two regions: `regions` and `sigmas` cannot be set")
    trials = [Trial(cell_label(s1, s2), replace(base, sigma1=s1, sigma2=s2), s)
              for s1 in sigma1s for s2 in sigma2s for s in seeds]
    desc = (f"Difficulty grid: `{base.model}` trained from scratch in every cell (texture widths sigma1 in "
            f"Omega_1, sigma2 in Omega_2; partition sigma {base.partition_sigma:g}, N={base.image_size}) for "
            f"{budget_text(base)}, {len(seeds)} seed(s) per cell, and measured on the cell's own held-out set. "
            "Equal widths cannot be told apart (IoU near chance); the further apart, the easier.")
    return Experiment("Difficulty grid", desc, trials, ("sigma1", "sigma2"), base, command)


def grid_means(ranked: Sequence[GroupStats], sigma1s: Sequence[float], sigma2s: Sequence[float],
               metric: str = "iou") -> np.ndarray:
    """(len(sigma1s), len(sigma2s)) mean ``metric`` of each cell's completed runs (NaN if none)."""
    by_label = {g.label: g for g in ranked}
    grid = np.full((len(sigma1s), len(sigma2s)), np.nan)
    for i, s1 in enumerate(sigma1s):
        for j, s2 in enumerate(sigma2s):
            g = by_label.get(cell_label(s1, s2))
            if g is not None and metric in g.metrics and g.metrics[metric].n:
                grid[i, j] = g.metrics[metric].mean
    return grid


def rows_to_grid(rows: Sequence[dict[str, Any]], sigma1s: Sequence[float], sigma2s: Sequence[float],
                 metric: str = "iou") -> np.ndarray:
    """:func:`evaluate_grid` rows (sigma1-major order) as a (len(sigma1s), len(sigma2s)) array."""
    return np.array([[r[metric] for r in rows[i * len(sigma2s):(i + 1) * len(sigma2s)]] for i in range(len(sigma1s))])


def grid_table(grid: np.ndarray, sigma1s: Sequence[float], sigma2s: Sequence[float], metric: str = "iou",
               swapped: np.ndarray | None = None, matched: np.ndarray | None = None) -> str:
    """The grid as a markdown table: rows sigma1, columns sigma2; label-swapped cells marked."""
    head = f"| {metric}: sigma1 \\ sigma2 | " + " | ".join(format_value(s) for s in sigma2s) + " |"
    lines = [head, "|" + "---|" * (len(sigma2s) + 1)]
    for i, s1 in enumerate(sigma1s):
        cells = ["—" if np.isnan(v) else f"{v:.3f}" for v in grid[i]]
        if swapped is not None and matched is not None:
            cells = [c + (f" swapped ({matched[i, j]:.3f} matched)" if swapped[i, j] else "")
                     for j, c in enumerate(cells)]
        lines.append(f"| {format_value(s1)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_grid_figures(out_dir: Path, grid: np.ndarray, scene: SceneSpec, sigma1s: Sequence[float],
                       sigma2s: Sequence[float], title: str, seed: int = 0) -> list[tuple[str, str]]:
    """``heatmap.png`` (IoU per cell) and ``scenes.png`` (one sample per cell); returns (title, file) pairs."""
    save_figure(heatmap_figure(grid, sigma1s, sigma2s, row_name="sigma1 (texture width in Omega_1)",
                               col_name="sigma2 (texture width in Omega_2)", label="held-out IoU", title=title),
                out_dir / HEATMAP_PNG)
    images = np.zeros((len(sigma1s), len(sigma2s), scene.image_size, scene.image_size), dtype=np.float32)
    mask = None
    for i, s1 in enumerate(sigma1s):
        for j, s2 in enumerate(sigma2s):
            img, labels = generate(replace(scene, texture_sigmas=(s1, s2)), 1,
                                   generator=torch.Generator().manual_seed(seed))
            images[i, j] = img[0, 0].numpy()
            mask = target_from_labels(labels, 2)[0, 0].numpy()
    save_figure(scene_grid_figure(images, mask, sigma1s, sigma2s, row_name="sigma1", col_name="sigma2",
                                  title=f"One scene per cell (seed {seed}, partition sigma "
                                        f"{scene.partition_sigma:g}, N={scene.image_size})"),
                out_dir / SCENES_PNG)
    return [("Held-out IoU per cell", HEATMAP_PNG), ("One sample scene per cell", SCENES_PNG)]


# ------------------------------------------------------------ one saved model, every cell
SWAP_MARGIN = 0.25  # matched IoU this much above the fixed-label IoU: the labels are swapped
def evaluate_grid(model_dir: str | os.PathLike[str], sigma1s: Sequence[float], sigma2s: Sequence[float], *,
                  scene_changes: dict[str, Any] | None = None, count: int = 64, seed: int = 2024,
                  device: str = "cpu") -> tuple[SceneSpec, list[dict[str, Any]]]:
    """Evaluate the model of ``model_dir`` (eval mode) on ``count`` scenes of every cell.

    Args:
        model_dir: a run directory.
        sigma1s, sigma2s: the grid.
        scene_changes: scene options (``image_size``, ``sigma``, ``smoothing``) to use
            instead of the model's training scene's (see :func:`override_scene`).
        count: held-out scenes per cell (the same partitions in every cell).
        seed: seed of the held-out scenes.
        device: where to evaluate.

    Returns:
        The base scene and one row per cell: ``sigma1, sigma2`` and the metrics.
    """
    sigma1s, sigma2s = check_values("sigma1s", sigma1s), check_values("sigma2s", sigma2s)
    dev = resolve_device(device)
    model = load_model(model_dir, device=dev)
    info = model.run_info
    if info.get("num_regions", 2) != 2:
        raise ValueError(f"model_dir: {model_dir} segments {info['num_regions']} regions; the grid needs two")
    trained = SceneSpec.from_dict(info["scene"]) if info.get("scene") else SceneSpec()
    scene = override_scene(trained, dict(scene_changes or {}))
    rows = []
    for s1 in sigma1s:
        for s2 in sigma2s:
            cell = replace(scene, texture_sigmas=(s1, s2))
            images, labels = generate(cell, count, generator=torch.Generator().manual_seed(seed))
            x, y = images.to(dev), target_from_labels(labels, 2).to(dev)
            metrics = evaluate(model, x, y, 2)
            # One matching for the cell's whole set: a swap the model makes on every image alike.
            matched = evaluate(model, x, y, 2, matching="set")["iou"]
            # Regions told apart but named the other way round (e.g. the two widths swapped
            # relative to training): the fixed-label IoU says "failed", the matched one "separated".
            swapped = matched - metrics["iou"] > SWAP_MARGIN
            rows.append({"sigma1": s1, "sigma2": s2, **metrics, "matched_iou": matched, "swapped": swapped})
    return scene, rows


@dataclass(frozen=True)
class ModelGrid:
    """One saved model's scores over a grid of texture widths (from :func:`evaluate_grid`).

    Attributes:
        model_dir: the run evaluated.
        scene: the base scene; rows: one per cell (sigma1-major), ``sigma1, sigma2`` and the metrics.
        sigma1s, sigma2s: the grid.
        count: held-out scenes per cell; seed: their seed.
    """

    model_dir: str
    scene: SceneSpec
    rows: Sequence[dict[str, Any]]
    sigma1s: Sequence[float]
    sigma2s: Sequence[float]
    count: int
    seed: int


def write_model_grid(out_dir: str | os.PathLike[str], grid: ModelGrid, command: str = "") -> Path:
    """``results.csv``, ``heatmap.png``, ``scenes.png``, ``result.json`` and ``summary.md`` of a :class:`ModelGrid`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows, s1, s2, scene = grid.rows, grid.sigma1s, grid.sigma2s, grid.scene
    write_results_csv(rows, out / "results.csv")
    means = rows_to_grid(rows, s1, s2)
    swapped, matched = rows_to_grid(rows, s1, s2, "swapped"), rows_to_grid(rows, s1, s2, "matched_iou")
    figures = write_grid_figures(out, means, scene, s1, s2, f"Held-out IoU of {grid.model_dir}", grid.seed)
    doc = {"title": "Difficulty grid of one saved model", "command": command, "description": [
        f"The model of `{grid.model_dir}` evaluated in eval mode on {grid.count} held-out scenes per cell (seed "
        f"{grid.seed}; the same partitions in every cell), N={scene.image_size}, partition sigma "
        f"{scene.partition_sigma:g}, smoothing {scene.smoothing_sigma} (otherwise the model's training scene). "
        "Rows: sigma1 (texture width in Omega_1); columns: sigma2 (Omega_2)."],
        "sections": [{"heading": "Held-out IoU", "paragraphs": [
            "Mean IoU over the two regions with the labels as trained (0 = the Omega_1 texture). A cell marked "
            "*swapped* separates the regions but names them the other way round (its IoU after matching "
            "predicted to true labels is given): the model tells the textures apart, it does not fail."],
            "table": grid_table(means, s1, s2, swapped=swapped.astype(bool), matched=matched)}],
        "figures": [list(f) for f in figures], "footer": "`results.csv` holds every metric of every cell.",
        "rows": list(rows)}
    write_result(out, "table", doc)
    return write_table_summary(out)
