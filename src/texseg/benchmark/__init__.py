"""Benchmark: score segmenters (trained models and classical methods) on fixed suites.

:func:`run_benchmark` scores (:func:`~texseg.benchmark.runner.score_benchmark`) and writes the leaderboard
(:func:`~texseg.benchmark.report.write_leaderboard`: leaderboard.csv/.md, figures, result.json); report.html
is rendered from result.json by ``texseg.report.write_report(out)`` (the CLI does).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from texseg.benchmark.report import write_leaderboard
from texseg.benchmark.runner import BenchmarkResult, BenchmarkSettings, Cell, score_benchmark
from texseg.benchmark.suites import Suite, get_suite, list_suites, register_suite, resolve_suite
from texseg.segmenters.base import Segmenter


def run_benchmark(segmenters: Sequence[str | Segmenter], suites: Sequence[str | os.PathLike[str] | Suite],
                  out: str | os.PathLike[str], settings: BenchmarkSettings | None = None, *,
                  report: bool = True) -> BenchmarkResult:
    """Score every segmenter on every suite and (``report``) write the leaderboard and result.json.

    Args:
        segmenters: classical method names, run directories, or :class:`Segmenter` objects.
        suites: suite names, JSON suite files, image folders, or :class:`Suite` objects.
        out: output folder (created); cells already there with the same inputs are reused.
        settings: method arguments, device, batch size, progress (:class:`BenchmarkSettings`).
        report: write ``leaderboard.csv``, ``leaderboard.md``, ``result.json`` and the figures.

    Returns:
        A :class:`BenchmarkResult` (every cell with its per-image metrics, the suites, the baselines);
        ``interrupted`` if a stop signal ended it early.
    """
    result = score_benchmark(segmenters, suites, out, settings)
    if report:
        write_leaderboard(result)
    return result


__all__ = ["BenchmarkResult", "BenchmarkSettings", "Cell", "Suite", "get_suite", "list_suites", "register_suite",
           "resolve_suite", "run_benchmark", "score_benchmark", "write_leaderboard"]
