"""Experiments: many training runs, one engine, one folder of results per experiment.

- :mod:`~texseg.experiments.runner`: trials -> run directories (skip, resume, parallel, Ctrl-C);
- :mod:`~texseg.experiments.experiment`: an :class:`Experiment` and :func:`run_experiment`;
- :mod:`~texseg.experiments.report`: results.csv, per-setting statistics, summary.md;
- :mod:`~texseg.experiments.figures`: curves with bands, final metrics, heatmaps;
- :mod:`~texseg.evaluation.stats` (re-exported): mean and Student-t interval over seeds;
- :mod:`~texseg.experiments.sweep`: learning-rate sweep and range test;
- :mod:`~texseg.experiments.compare`: one option, several values (optimizers, models, losses, ...);
- :mod:`~texseg.experiments.difficulty`: IoU over a (sigma1, sigma2) grid.

Example::

    from texseg.experiments import lr_sweep, run_experiment, write_experiment_summary
    exp = lr_sweep(TrainConfig(model="cnn", iterations=500, time_budget=None), [1e-3, 1e-2], seeds=[0, 1, 2])
    result = run_experiment(exp, "experiments/lr", jobs=2)
    write_experiment_summary(exp, result)
"""

from texseg.evaluation.stats import Interval, mean_ci
from texseg.experiments.compare import (
    ComparisonResult,
    ComparisonSettings,
    TuneSettings,
    chosen_lrs,
    comparison,
    run_comparison,
    tuning_experiment,
)
from texseg.experiments.difficulty import difficulty_experiment, evaluate_grid
from texseg.experiments.experiment import (
    Experiment,
    read_experiment_result,
    render_experiment_summary,
    run_experiment,
    write_experiment_summary,
)
from texseg.experiments.report import ExperimentResult, GroupStats, TrialRecord, Verdict, verdict
from texseg.experiments.runner import FAILED, NOT_RUN, Trial, TrialResult, run_trials
from texseg.experiments.sweep import RangeTestConfig, lr_range_test, lr_sweep

__all__ = [
    "FAILED",
    "NOT_RUN",
    "ComparisonResult",
    "ComparisonSettings",
    "Experiment",
    "ExperimentResult",
    "GroupStats",
    "Interval",
    "RangeTestConfig",
    "Trial",
    "TrialRecord",
    "TrialResult",
    "TuneSettings",
    "Verdict",
    "chosen_lrs",
    "comparison",
    "difficulty_experiment",
    "evaluate_grid",
    "lr_range_test",
    "lr_sweep",
    "mean_ci",
    "read_experiment_result",
    "render_experiment_summary",
    "run_comparison",
    "run_experiment",
    "run_trials",
    "tuning_experiment",
    "verdict",
    "write_experiment_summary",
]
