"""Run segmenters on suites: one *cell* per segmenter x suite, each saved when done.

A cell's results live in ``OUT/cells/<suite>/<segmenter>-<key hash>.json`` (per-image
metrics, timings) beside ``...-<hash>.npy`` (the first predictions, for the qualitative
panel). The hash covers everything that determines the result (the segmenter's
parameters or weights, the suite's data, the metric settings), so a re-run skips cells
whose file exists and recomputes those whose inputs changed. A stop signal (Ctrl-C)
ends the run after the current batch; finished cells are kept and reported.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from texseg._validate import check_int
from texseg.benchmark.suites import Suite, resolve_suite
from texseg.evaluation.names import BASELINE, is_bounded
from texseg.evaluation.region_metrics import region_metrics
from texseg.evaluation.stats import Interval, bootstrap_mean_ci
from texseg.io import atomic_path, atomic_write_json, slug
from texseg.segmenters.base import Segmenter
from texseg.segmenters.loading import load_segmenter
from texseg.signals import catch_stop_signals
from texseg.training.progress import Progress

__all__ = ["BenchmarkResult", "BenchmarkSettings", "Cell", "resolve_segmenters", "score_benchmark"]

CELL_FORMAT = 1
BOUNDARY_TOLERANCE = 2.0
PANEL_IMAGES = 3


@dataclass
class Cell:
    """The result of one segmenter on one suite.

    Attributes:
        segmenter, suite: names shown in tables.
        status: ``done`` (scored), ``skipped`` (not applicable, see ``note``) or ``pending``
            (not reached: the run was stopped).
        note: why a cell is empty; for a supervised method, how it was trained.
        num_regions: K of the suite.
        per_image: metric name -> one value per image.
        seconds: time spent in ``segment`` over all images; fit_seconds: in ``fit``.
        pixels: total pixels segmented.
        cached: True if loaded from an earlier run.
        prediction_file: the saved first predictions (``.npy``), if any.
    """
    segmenter: str
    suite: str
    status: str
    note: str = ""
    num_regions: int = 0
    per_image: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    fit_seconds: float = 0.0
    pixels: int = 0
    cached: bool = False
    prediction_file: str | None = None

    @property
    def images(self) -> int:
        """Images scored: those of a K the segmenter does not support were skipped (every metric NaN)."""
        rows = list(zip(*self.per_image.values()))
        return sum(1 for row in rows if any(not math.isnan(v) for v in row))

    @cached_property
    def intervals(self) -> dict[str, Interval]:
        """Each metric's mean over the images and its 95% bootstrap interval (computed once: the leaderboard's
        CSV, tables and figures all show them, and resampling costs ~3 ms a metric)."""
        return {m: bootstrap_mean_ci(v, bounded=is_bounded(m)) for m, v in self.per_image.items()}


@dataclass
class BenchmarkResult:
    """All cells of a benchmark run, in segmenter-major order, and whether it was stopped."""
    cells: list[Cell]
    suites: list[Suite]
    segmenter_names: list[str]
    out: Path
    interrupted: bool = False
    baselines: list[Cell] = field(default_factory=list)  # per suite, one label everywhere (a floor, not a method)


def baseline_cell(suite: Suite) -> Cell:
    """The scores of predicting one label on every pixel of the suite's test images."""
    _, labels = suite.load("test")
    k = suite.num_regions
    per_image: dict[str, list[float]] = {}
    for truth in labels:
        t = truth.numpy()
        for name, value in region_metrics(t, np.zeros_like(t), k, BOUNDARY_TOLERANCE).items():
            per_image.setdefault(name, []).append(value)
    return Cell(BASELINE, suite.name, "done", "baseline: the score of a model that learnt nothing", k, per_image,
                pixels=int(labels.numel()))


def resolve_segmenters(names: Sequence[str | Segmenter], method_args: dict[str, dict[str, Any]] | None = None,
                       device: str | torch.device | None = None) -> list[Segmenter]:
    """Build the segmenters, checking that every method argument belongs to one of them."""
    method_args = dict(method_args or {})
    stray = sorted(set(method_args) - {n for n in names if isinstance(n, str)})
    if stray:
        raise ValueError(f"method arguments for {stray[0]!r}, which is not among the segmenters "
                         f"({', '.join(str(n) for n in names)})")
    out = []
    for n in names:
        out.append(n if isinstance(n, Segmenter) else load_segmenter(n, device=device, **method_args.get(n, {})))
    seen: dict[str, int] = {}
    for s in out:  # two run directories with one name: tell them apart in tables
        seen[s.name] = seen.get(s.name, 0) + 1
        if seen[s.name] > 1:
            s.name = f"{s.name}#{seen[s.name]}"
    return out


def _cell_key(segmenter: Segmenter, suite: Suite) -> dict[str, Any]:
    return {"format": CELL_FORMAT, "segmenter": segmenter.describe(), "suite": suite.describe(),
            "boundary_tolerance": BOUNDARY_TOLERANCE, "panel_images": PANEL_IMAGES}


def _cell_path(out: Path, segmenter: Segmenter, suite: Suite, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return out / "cells" / slug(suite.name) / f"{slug(segmenter.name)}-{digest}.json"


def _load_cell(path: Path, key: dict[str, Any], segmenter: str, suite: str) -> Cell | None:
    """A finished cell saved by an earlier run, or None (absent, unreadable or another key)."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("key") != json.loads(json.dumps(key)):
        return None
    pred = path.with_suffix(".npy")
    return Cell(segmenter, suite, "done", saved.get("note", ""), saved["num_regions"], saved["per_image"],
                saved["seconds"], saved["fit_seconds"], saved["pixels"], cached=True,
                prediction_file=str(pred) if pred.is_file() else None)


def _save_cell(path: Path, key: dict[str, Any], cell: Cell, predictions: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pred_path = path.with_suffix(".npy")
    with atomic_path(pred_path) as tmp, open(tmp, "wb") as f:
        np.save(f, predictions.astype(np.uint8), allow_pickle=False)
    cell.prediction_file = str(pred_path)
    # The JSON is written last: its presence means the cell is complete.
    atomic_write_json(path, {"key": key, "note": cell.note, "num_regions": cell.num_regions,
                             "per_image": cell.per_image, "seconds": cell.seconds,
                             "fit_seconds": cell.fit_seconds, "pixels": cell.pixels})


def _why_skipped(segmenter: Segmenter, suite: Suite) -> str | None:
    if suite.per_image_regions:  # K varies: skipped only where no K of the suite is supported
        if not any(segmenter.supports(k) for k in range(2, suite.num_regions + 1)):
            return segmenter.why_not(suite.num_regions)
    elif not segmenter.supports(suite.num_regions):
        return segmenter.why_not(suite.num_regions)
    if segmenter.supervised and not suite.has_split("train"):
        return "supervised method; the suite has no training images"
    return None


def _fit(segmenter: Segmenter, suite: Suite, k: int) -> tuple[float, str] | None:
    """Fit a supervised method on the suite's training images of ``k`` regions: (seconds, note); None if none."""
    n_train = int(getattr(segmenter, "train_images", 8))
    if suite.per_image_regions:
        images, labels = suite.load("train")
        keep = [i for i, ki in enumerate(suite.regions_per_image(labels)) if ki == k][:n_train]
        if not keep:
            return None
        train_images, train_labels = images[keep], labels[keep]
    else:
        train_images, train_labels = suite.load("train", n_train)
    start = time.perf_counter()
    segmenter.fit(train_images, train_labels)
    return time.perf_counter() - start, f"fitted on {train_images.shape[0]} images of the suite's training split"


class _ImageProgress(Progress):
    """:class:`Progress` counted in images, usable as a context manager."""
    def __init__(self, total: int, enabled: bool) -> None:
        super().__init__(max(total, 1), 0, "img", enabled=enabled, what="image", desc="benchmark")

    def advance(self, images: int) -> None:
        self.update(images, int(self.done + images))

    def __enter__(self) -> _ImageProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _run_cell(segmenter: Segmenter, suite: Suite, batch_size: int, stop: Any, bar: Progress | None) -> \
        tuple[Cell, np.ndarray] | None:
    """Score one segmenter on one suite; None if stopped before the end.

    Images are segmented in groups of the same true K (one group unless K varies per image);
    a group whose K the segmenter does not support is skipped (its images' metrics are NaN) and
    named in the note.
    """
    images, labels = suite.load("test")
    k_max = suite.num_regions
    cell = Cell(segmenter.name, suite.name, "done", num_regions=k_max)  # pixels: of the images it segments
    ks = suite.regions_per_image(labels)
    notes = []
    results: list[dict[str, float] | None] = [None] * len(ks)
    predictions = np.zeros((len(ks), *labels.shape[2:]), dtype=np.int64)
    for k in sorted(set(ks)):
        group = [i for i, ki in enumerate(ks) if ki == k]
        where = f" (K = {k}, {len(group)} images)" if suite.per_image_regions else ""
        if not segmenter.supports(k):
            notes.append(f"skipped{where}: {segmenter.why_not(k)}")
            if bar is not None:
                bar.advance(len(group))
            continue
        if segmenter.supervised:
            fitted = _fit(segmenter, suite, k)
            if fitted is None:
                notes.append(f"skipped{where}: no training images with {k} regions")
                if bar is not None:
                    bar.advance(len(group))
                continue
            cell.fit_seconds += fitted[0]
            notes.append(f"supervised{where}: {fitted[1]}")
        for first in range(0, len(group), batch_size):
            if stop.count:
                return None
            batch = group[first:first + batch_size]
            start = time.perf_counter()
            pred = segmenter.segment(images[batch], k)
            cell.seconds += time.perf_counter() - start
            cell.pixels += int(labels[batch].numel())
            for i, p in zip(batch, pred.cpu().numpy()):
                results[i] = region_metrics(labels[i].numpy(), p, k_max, BOUNDARY_TOLERANCE)
                predictions[i] = p[0]
            if bar is not None:
                bar.advance(len(batch))
    names = next((list(r) for r in results if r is not None), [])
    cell.per_image = {name: [math.nan if r is None else r[name] for r in results] for name in names}
    cell.note = "; ".join(notes)
    return cell, predictions[:PANEL_IMAGES]


@dataclass(frozen=True)
class BenchmarkSettings:
    """How :func:`score_benchmark` runs.

    Attributes:
        method_args: ``{method name: {parameter: value}}`` for classical methods.
        device: where trained models run (default CPU).
        batch_size: images per ``segment`` call (a stop is honoured between calls).
        progress: show a progress bar.
    """

    method_args: dict[str, dict[str, Any]] | None = None
    device: str | torch.device | None = None
    batch_size: int = 8
    progress: bool = True


def score_benchmark(segmenters: Sequence[str | Segmenter], suites: Sequence[str | os.PathLike[str] | Suite],
                    out: str | os.PathLike[str], settings: BenchmarkSettings | None = None) -> BenchmarkResult:
    """Score every segmenter on every suite (cells saved in ``out/cells``); write no leaderboard.

    Args:
        segmenters: classical method names, run directories, or :class:`Segmenter` objects.
        suites: suite names, JSON suite files, image folders, or :class:`Suite` objects.
        out: output folder (created); cells already there with the same inputs are reused.
        settings: method arguments, device, batch size, progress (see :class:`BenchmarkSettings`).

    Returns:
        A :class:`BenchmarkResult` with each suite's constant baseline; ``interrupted`` if a stop
        signal ended it early. :func:`texseg.benchmark.run_benchmark` also writes the leaderboard.
    """
    s = settings or BenchmarkSettings()
    check_int("batch_size", s.batch_size, minimum=1)
    suite_objs = [x if isinstance(x, Suite) else resolve_suite(x) for x in suites]
    if not suite_objs or not segmenters:
        raise ValueError("segmenters and suites must each name at least one")
    names = [x.name for x in suite_objs]
    if len(set(names)) != len(names):
        raise ValueError(f"suites must have distinct names, got {', '.join(names)}")
    segs = resolve_segmenters(segmenters, s.method_args, s.device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cells: list[Cell] = []
    # A bar on a terminal, plain lines in a log (never carriage returns), as `texseg train` does.
    bar = _ImageProgress(sum(x.count for x in suite_objs) * len(segs), s.progress)
    with catch_stop_signals() as stop, bar:
        for seg in segs:
            for suite in suite_objs:
                cells.append(_cell_of(seg, suite, out, s.batch_size, stop, bar))
    interrupted = any(c.status == "pending" for c in cells)
    baselines = [baseline_cell(x) for x in suite_objs]
    return BenchmarkResult(cells, suite_objs, [x.name for x in segs], out, interrupted, baselines)


def _cell_of(seg: Segmenter, suite: Suite, out: Path, batch_size: int, stop: Any, bar: _ImageProgress) -> Cell:
    """One cell: skipped, loaded from an earlier run, scored now, or pending (stopped)."""
    why = _why_skipped(seg, suite)
    if why is not None:
        bar.advance(suite.count)
        return Cell(seg.name, suite.name, "skipped", why, suite.num_regions)
    key = _cell_key(seg, suite)
    path = _cell_path(out, seg, suite, key)
    cached = _load_cell(path, key, seg.name, suite.name)
    if cached is not None:
        bar.advance(suite.count)
        return cached
    pending = Cell(seg.name, suite.name, "pending", "not run: the benchmark was stopped", suite.num_regions)
    if stop.count:
        return pending
    bar.set(cell=f"{seg.name} on {suite.name}")
    result = _run_cell(seg, suite, batch_size, stop, bar)
    if result is None:
        return pending
    cell, predictions = result
    _save_cell(path, key, cell, predictions)
    return cell
