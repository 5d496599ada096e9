"""Benchmark: score segmenters (trained models and classical methods) on fixed suites."""

from texseg.benchmark.runner import BenchmarkResult, Cell, run_benchmark
from texseg.benchmark.suites import Suite, get_suite, list_suites, register_suite, resolve_suite

__all__ = ["BenchmarkResult", "Cell", "Suite", "get_suite", "list_suites", "register_suite", "resolve_suite",
           "run_benchmark"]
