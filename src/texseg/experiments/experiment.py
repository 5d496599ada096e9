"""An experiment: trials plus what they mean; running it writes one folder.

``<out>/results.csv``, ``<out>/curves.png``, ``<out>/final.png``, ``<out>/result.json`` (the
typed :class:`ExperimentResult`), ``<out>/summary.md`` and ``<out>/report.html`` (both rendered
from result.json) and ``<out>/runs/<trial>/`` (the runs themselves). Every kind of experiment (sweeps,
comparisons, difficulty grids) is built as an :class:`Experiment` and goes through
:func:`run_experiment`; only the list of trials differs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from texseg.experiments.figures import curves_figure, final_figure
from texseg.experiments.report import (
    ExperimentResult,
    TrialRecord,
    group_stats,
    rank,
    result_rows,
    summary_markdown,
    write_results_csv,
)
from texseg.experiments.runner import Logger, Trial, run_trials
from texseg.io import atomic_write_json, atomic_write_text, read_json
from texseg.plots import save_figure
from texseg.result_file import read_result, write_result
from texseg.training.config import TrainConfig

RESULTS, SUMMARY_MD, CURVES_PNG, FINAL_PNG = "results.csv", "summary.md", "curves.png", "final.png"
EXPERIMENT_JSON = "experiment.json"


@dataclass
class Experiment:
    """What to run and how to describe it.

    Attributes:
        title: heading of ``summary.md`` and the figures.
        description: a paragraph saying what is compared and why.
        trials: the runs; trials of one label differ only by seed.
        varied: the config fields that differ between labels (columns of results.csv).
        base: the configuration every trial starts from (shown as shared settings).
        command: the exact command line that runs the experiment.
        metric: the held-out metric that ranks settings.
    """

    title: str
    description: str
    trials: list[Trial]
    varied: tuple[str, ...]
    base: TrainConfig
    command: str = ""
    metric: str = "iou"

    def runs_by_label(self, out_dir: Path) -> dict[str, list[Path]]:
        """Label -> its trials' run directories, labels in first-seen order."""
        out: dict[str, list[Path]] = {}
        for t in self.trials:
            out.setdefault(t.label, []).append(out_dir / "runs" / t.trial_id)
        return out


def claim_folder(out: Path, experiment: Experiment) -> None:
    """Record which experiment ``out`` holds (``experiment.json``); refuse a folder of another one.

    Raises:
        ValueError: ``out`` holds another experiment, or files an experiment would replace.
    """
    record = {"title": experiment.title, "varied": list(experiment.varied)}
    path = out / EXPERIMENT_JSON
    if path.is_file():
        try:
            theirs = read_json(path)
        except ValueError:
            theirs = None
        if not isinstance(theirs, dict) or {k: theirs.get(k) for k in record} != record:
            what = theirs.get("title") if isinstance(theirs, dict) else "something else"
            raise ValueError(f"out: {out} holds another experiment ({what}); choose another `out` folder "
                             "(nothing was changed)")
        return
    clashes = [name for name in (RESULTS, SUMMARY_MD, CURVES_PNG, FINAL_PNG) if (out / name).exists()]
    if clashes:
        raise ValueError(f"out: {out} holds files an experiment would replace ({', '.join(clashes)}); "
                         "choose another `out` folder (nothing was changed)")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, record)


def run_experiment(experiment: Experiment, out_dir: str | os.PathLike[str], *, jobs: int | str = 1,
                   progress: bool = False, log: Logger | None = None) -> ExperimentResult:
    """Run the trials not finished yet, then write ``results.csv``, ``curves.png`` and ``final.png``.

    Call :func:`write_experiment_summary` afterwards (callers may add sections and figures).

    Args:
        experiment: what to run.
        out_dir: the experiment folder (created; reused on a rerun).
        jobs: trials run at once.
        progress: a progress bar per trial (``jobs == 1`` only).
        log: receives one line per finished trial.
    """
    out = Path(out_dir)
    claim_folder(out, experiment)
    outcome = run_trials(experiment.trials, out, jobs=jobs, progress=progress, log=log)
    configs = [t.run_config() for t in experiment.trials]
    rows = result_rows(outcome.results, configs, experiment.varied, out)
    write_results_csv(rows, out / RESULTS)
    ranked = rank(group_stats(rows, experiment.varied), experiment.metric)
    save_figure(curves_figure(experiment.runs_by_label(out), experiment.title), out / CURVES_PNG)
    save_figure(final_figure(ranked, experiment.metric, experiment.varied, experiment.title), out / FINAL_PNG)
    trials = [TrialRecord.from_result(r, out) for r in outcome.results]
    return ExperimentResult(out, experiment.title, experiment.description, experiment.command, experiment.varied,
                            experiment.base, experiment.metric, trials, rows, ranked, outcome.interrupted,
                            outcome=outcome)


def write_experiment_summary(experiment: Experiment, result: ExperimentResult, *, sections: Sequence[str] = (),
                             figures: Sequence[tuple[str, str]] = (), best_section: str | None = None) -> Path:
    """Write ``result.json``, then ``summary.md`` rendered from it.

    ``report.html`` is rendered from the same result.json by whoever wants the page, once per
    experiment: ``texseg.report.write_report(result.out_dir)`` (the CLI does).

    Args:
        experiment: the experiment that ran.
        result: what :func:`run_experiment` returned (its figures, sections and best section are set here).
        sections: extra markdown sections, placed after the best choice.
        figures: extra ``(title, file name in out_dir)`` figures, placed after the standard ones.
        best_section: a markdown section replacing the verdict (a tuning's pick is not a claim of "best").

    Returns:
        The path of ``summary.md``.
    """
    standard = [("Final held-out metric per setting", FINAL_PNG),
                ("Learning curves: validation IoU and training loss against iterations and training time",
                 CURVES_PNG)]
    result.figures, result.sections, result.best_section = [*standard, *figures], list(sections), best_section
    write_result(result.out_dir, "experiment", result.to_dict())
    return render_experiment_summary(result.out_dir)


def read_experiment_result(out_dir: str | os.PathLike[str]) -> ExperimentResult:
    """The :class:`ExperimentResult` an experiment folder's ``result.json`` holds.

    Raises:
        ValueError: the folder has no result.json (an older texseg, or the experiment never finished), or
            it is not an experiment's.
    """
    data = read_result(out_dir, "experiment")
    if data is None:
        raise ValueError(f"out_dir: {out_dir} holds no result.json (run the experiment's command again to write it)")
    return ExperimentResult.from_dict(data, out_dir)


def render_experiment_summary(out_dir: str | os.PathLike[str]) -> Path:
    """(Re)write ``summary.md`` from the folder's ``result.json`` alone; returns its path."""
    path = Path(out_dir) / SUMMARY_MD
    atomic_write_text(path, summary_markdown(read_experiment_result(out_dir)))
    return path
