"""Hyperparameter search: Optuna studies whose trials are ordinary texseg runs.

    from pathlib import Path
    from texseg.search import SearchSettings, run_search

    result = run_search(SearchSettings(Path("searches/s1"), trials=20), {"time_budget": 30})
    print(result.best)  # value, params, run_dir of the best trial

Modules: ``settings`` (SearchSettings), ``space`` (what is searched), ``storage`` (the
study, its folder, heartbeats and stale trials), ``study`` (run_search: workers and the
trial loop), ``report`` (best.json, trials.csv, plots, summary.md).
"""

from texseg.search.report import write_reports
from texseg.search.settings import SearchSettings
from texseg.search.space import SearchSpace, build_space
from texseg.search.study import SearchResult, run_search

__all__ = ["SearchResult", "SearchSettings", "SearchSpace", "build_space", "run_search", "write_reports"]
