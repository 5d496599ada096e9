"""Statistics over seeds: means with confidence intervals, and curve bands.

Each seed of a setting is one independent training run, so a setting's final metric is a
sample of a few values; its uncertainty is the t-interval of their mean (a normal
interval would be far too narrow for 3 seeds: t(0.975, 2) = 4.30, not 1.96).

Metrics bounded to [0, 1] (IoU, accuracy, ...) get the t-interval of their logits mapped
back (a transformed interval), so it never leaves [0, 1] and is asymmetric near the
bounds; with one seed there is no interval at all. Means over many images (a benchmark
suite) get a bootstrap interval instead (:func:`bootstrap_mean_ci`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special, stats


@dataclass(frozen=True)
class Interval:
    """The mean of ``n`` values and its two-sided confidence interval ``[low, high]``.

    ``low``/``high`` are NaN when ``n < 2`` (one value says nothing about its spread),
    and everything is NaN when ``n == 0``.
    """

    mean: float
    low: float
    high: float
    n: int
    confidence: float = 0.95
    bounded: bool = False  # a [0, 1] metric: the interval is asymmetric (see the module docstring)
    values: tuple[float, ...] = ()  # the finite values it summarises, one per seed

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    @property
    def errors(self) -> tuple[float, float]:
        """Distances from the mean down to ``low`` and up to ``high`` (0 when undefined), for error bars."""
        if self.n < 2:
            return 0.0, 0.0
        return self.mean - self.low, self.high - self.mean

    def format(self, digits: int = 3) -> str:
        """``0.912 ± 0.013`` (unbounded) or ``0.912 [0.899, 0.925]`` (bounded); ``0.912 (n=1)``; ``—``."""
        if self.n == 0:
            return "—"
        if self.n == 1:
            return f"{self.mean:.{digits}f} (n=1)"
        if self.bounded:
            return f"{self.mean:.{digits}f} {self.format_bounds(digits)}"
        return f"{self.mean:.{digits}f} ± {self.half_width:.{digits}f}"

    def to_dict(self) -> dict[str, object]:
        """The interval as JSON-ready values (NaN stays NaN; result.json writes it as null)."""
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n, "confidence": self.confidence,
                "bounded": self.bounded, "values": list(self.values)}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Interval:
        """The inverse of :meth:`to_dict` (null numbers read as NaN)."""
        def num(v: object) -> float:
            return math.nan if v is None else float(v)  # type: ignore[arg-type]

        return cls(num(data["mean"]), num(data["low"]), num(data["high"]), int(data["n"]),  # type: ignore[arg-type]
                   num(data.get("confidence", 0.95)), bool(data.get("bounded", False)),
                   tuple(num(v) for v in data.get("values", ())))  # type: ignore[union-attr]

    def format_bounds(self, digits: int = 3) -> str:
        """``[0.899, 0.925]``, or ``—`` when the interval is undefined."""
        if self.n < 2:
            return "—"
        return f"[{self.low:.{digits}f}, {self.high:.{digits}f}]"

    def overlaps(self, other: Interval) -> bool:
        """Whether the two intervals share a point (False when either is undefined: nothing to compare)."""
        if self.n < 2 or other.n < 2:
            return False
        return self.low <= other.high and other.low <= self.high


# Values this close to 0 or 1 are moved in before taking logits (a perfect seed is not infinitely sure).
_EDGE = 1e-4


def mean_ci(values: Sequence[float], confidence: float = 0.95, *, bounded: bool = False) -> Interval:
    """Mean and confidence interval of the finite ``values`` (NaN and inf are left out).

    Args:
        values: one value per seed.
        confidence: coverage of the interval, in (0, 1).
        bounded: the values are fractions in [0, 1]: the interval is the t-interval of
            their logits, mapped back, so it stays inside (0, 1).

    Returns:
        An :class:`Interval`. Unbounded: ``mean ± t((1+c)/2, n-1) * s / sqrt(n)`` with
        ``s`` the sample standard deviation (ddof=1). Bounded: the same on
        ``logit(values)``, through the sigmoid; widened if needed so that it contains the
        mean it is reported with. No interval for fewer than two values.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    vals = np.array([float(v) for v in values if v is not None and math.isfinite(float(v))], dtype=np.float64)
    n = len(vals)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, confidence, bounded)
    mean = float(vals.mean())
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1, confidence, bounded, tuple(vals))
    t = float(stats.t.ppf((1 + confidence) / 2, n - 1))
    if not bounded:
        half = t * float(vals.std(ddof=1)) / math.sqrt(n)
        return Interval(mean, mean - half, mean + half, n, confidence, bounded, tuple(vals))
    logits = special.logit(np.clip(vals, _EDGE, 1 - _EDGE))
    half = t * float(logits.std(ddof=1)) / math.sqrt(n)
    low, high = (float(special.expit(logits.mean() + d)) for d in (-half, half))
    return Interval(mean, min(low, mean), max(high, mean), n, confidence, bounded, tuple(vals))


# Fewer values than this get mean_ci's t-interval: a bootstrap of a handful of values is no estimate.
MIN_BOOTSTRAP = 10


def bootstrap_mean_ci(values: Sequence[float], confidence: float = 0.95, *, bounded: bool = False,
                      resamples: int = 9999, seed: int = 0) -> Interval:
    """Mean of many values (one per image of a suite) and the percentile bootstrap interval of that mean.

    Per-image metrics are skewed (most images near 1, a few failures): the logit t-interval of
    :func:`mean_ci`, right for a few seeds, then centres on a different average than the mean
    (0.99 on 60 images and 0.2 on 4: mean 0.941, logit interval [0.979, 0.990], widened to the
    mean). Resampling the images (``scipy.stats.bootstrap``, seeded: the same values give the same
    interval) follows the skew and, being made of means of the values, stays inside their range.

    Args:
        values: one value per image (NaN and inf are left out).
        confidence: coverage of the interval, in (0, 1).
        bounded: the values are fractions in [0, 1] (how :meth:`Interval.format` shows it).
        resamples: bootstrap resamples; seed: their random generator's seed.

    Returns:
        An :class:`Interval` (widened if needed to contain the mean); :func:`mean_ci`'s for fewer
        than :data:`MIN_BOOTSTRAP` values.
    """
    vals = np.array([float(v) for v in values if v is not None and math.isfinite(float(v))], dtype=np.float64)
    if len(vals) < MIN_BOOTSTRAP:
        return mean_ci(vals, confidence, bounded=bounded)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    mean = float(vals.mean())
    if np.ptp(vals) == 0:  # every image alike: nothing to resample
        return Interval(mean, mean, mean, len(vals), confidence, bounded, tuple(vals))
    # batch: resamples drawn 1000 at a time, so a folder of thousands of images needs MBs, not GBs
    ci = stats.bootstrap((vals,), np.mean, n_resamples=resamples, batch=1000, confidence_level=confidence,
                         method="percentile", rng=np.random.default_rng(seed)).confidence_interval
    return Interval(mean, min(float(ci.low), mean), max(float(ci.high), mean), len(vals), confidence, bounded,
                    tuple(vals))


@dataclass(frozen=True)
class Band:
    """Several runs' curves resampled on one grid: their mean and min-max envelope."""

    x: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray


def band(curves: Sequence[tuple[Sequence[float], Sequence[float]]], points: int = 100) -> Band | None:
    """Resample curves (x increasing) on a common grid and summarise them pointwise.

    The grid spans the x range *every* curve covers, so the mean never mixes in a run
    that has already stopped; a single curve is returned as it is.

    Args:
        curves: one ``(xs, ys)`` per run; points with a non-finite y are dropped.
        points: grid size when there are several curves.

    Returns:
        The :class:`Band`, or None when no curve has a finite point.
    """
    clean = []
    for xs, ys in curves:
        x, y = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
        keep = np.isfinite(x) & np.isfinite(y)
        if keep.any():
            clean.append((x[keep], y[keep]))
    if not clean:
        return None
    if len(clean) == 1:
        x, y = clean[0]
        return Band(x, y, y, y)
    lo, hi = max(x[0] for x, _ in clean), min(x[-1] for x, _ in clean)
    if hi < lo:  # the runs share no x range (e.g. one stopped before another started)
        lo, hi = min(x[0] for x, _ in clean), max(x[-1] for x, _ in clean)
    grid = np.linspace(lo, hi, points) if hi > lo else np.array([lo])
    stacked = np.stack([np.interp(grid, x, y) for x, y in clean])
    return Band(grid, stacked.mean(axis=0), stacked.min(axis=0), stacked.max(axis=0))
